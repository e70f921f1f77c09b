# Iterative magnitude pruning with rewinding of MambaVision-T on the demo data (CPU), unstructured: state (weights,
# optimizer, LR schedule, EMA copy) saved before iteration 25 (k: the end of the warm-up epoch); every 25 iterations
# 20% of the surviving Linear/Conv weights are pruned (layer-wise) and survivors rewound, until 50% sparsity (4
# rounds, last rewind at iteration 125); the ticket then trains 100 iterations from step k, the dense schedule's
# length after k (its cosine ends at iteration 125): 9 epochs of 25 iterations. See docs/pruning.md.
_base_ = '../mambavision-tiny_demo.py'

train_cfg = dict(max_epochs=9, val_interval=9)
custom_hooks = [
    dict(type='EMAHook', momentum=0.05, update_buffers=True, priority='ABOVE_NORMAL'),
    dict(type='mmssm.IMPRewindHook', target_sparsity=0.5, prune_fraction=0.2, rewind_iter=25, round_iters=25,
         scope='layer', log_per_layer=False),
]
