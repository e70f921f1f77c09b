# Iterative magnitude pruning with rewinding of Vim-T on the demo data (CPU): state (weights, optimizer, LR schedule,
# EMA copy) saved before iteration 25 (k: the end of the warm-up epoch); every 25 iterations 20% of the survivors are
# pruned (layer-wise) and survivors rewound, until 50% sparsity (4 rounds, last rewind at iteration 125); the ticket
# then trains 100 iterations from step k, as long as the dense schedule after k: 9 epochs of 25 iterations.
_base_ = '../vim-tiny-p16_demo.py'

train_cfg = dict(max_epochs=9, val_interval=9)
custom_hooks = [
    # an EMA that follows the weights within ~20 iterations (the base's 4e-5 stays at the initial weights over a
    # 125-iteration run, and validation would measure the masked initial weights)
    dict(type='EMAHook', momentum=0.05, priority='ABOVE_NORMAL'),
    dict(type='mmssm.IMPRewindHook', target_sparsity=0.5, prune_fraction=0.2, rewind_iter=25, round_iters=25,
         scope='layer', log_per_layer=False),
]
