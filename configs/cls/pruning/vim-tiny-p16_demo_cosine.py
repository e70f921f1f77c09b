# Cosine-scheduled dynamic magnitude pruning of Vim-T on the demo data (CPU): 0 -> 50% of the Linear/Conv weights
# over epochs 0..4 (one global threshold), masks updated every epoch, EMA copy masked too. See docs/pruning.md.
_base_ = '../vim-tiny-p16_demo.py'

custom_hooks = [
    # an EMA that follows the weights within ~20 iterations (the base's 4e-5 stays at the initial weights over a
    # 125-iteration run, and validation would measure the masked initial weights)
    dict(type='EMAHook', momentum=0.05, priority='ABOVE_NORMAL'),
    dict(type='mmssm.CosinePruningHook', start_sparsity=0.0, target_sparsity=0.5, begin=0, end=4, interval=1,
         by_epoch=True, scope='global', log_per_layer=False),
]
