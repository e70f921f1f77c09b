# Iterative magnitude pruning with rewinding of Vim-T on the demo data (CPU): state saved before iteration 5,
# every 25 iterations 20% of the survivors are pruned (layer-wise) and survivors rewound, until 50% sparsity.
_base_ = '../vim-tiny-p16_demo.py'

custom_hooks = [
    dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL'),
    dict(type='mmssm.IMPRewindHook', target_sparsity=0.5, prune_fraction=0.2, rewind_iter=5, round_iters=25,
         scope='layer', log_per_layer=False),
]
