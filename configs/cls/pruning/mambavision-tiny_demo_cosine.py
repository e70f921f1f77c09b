# Cosine-scheduled structured pruning of MambaVision-T on the demo data (CPU): 0 -> 50% of the units of every
# structured group (SSM inner channels, attention heads, MLP hidden units, conv-block channels), ranked by the RMS
# of each unit's weights, layer-wise, over epochs 0..4; EMA copy masked too. The checkpoint exports to a smaller
# model with tools/analysis/prune_export.py. See docs/pruning.md.
_base_ = '../mambavision-tiny_demo.py'

custom_hooks = [
    dict(type='EMAHook', momentum=0.05, update_buffers=True, priority='ABOVE_NORMAL'),
    dict(type='mmssm.CosinePruningHook', granularity='channel', start_sparsity=0.0, target_sparsity=0.5, begin=0,
         end=4, interval=1, by_epoch=True, scope='layer', log_per_layer=False),
]
