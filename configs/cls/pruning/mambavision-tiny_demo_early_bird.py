# Early-bird ticket of MambaVision-T on the demo data (CPU), structured: the conv stages' block channels are scored
# by their BatchNorm scales |gamma| (trained with the L1 penalty, one global threshold: the original method), the
# hybrid stages' units (SSM channels, heads, MLP units) by mean |w| per group; 30% masked each epoch; the ticket is
# drawn once the newest mask is within epsilon=0.1 (normalized Hamming distance) of the previous 2 (window=3: 5 is
# too long for a CPU run). See docs/pruning.md.
_base_ = '../mambavision-tiny_demo.py'

train_cfg = dict(max_epochs=6, val_interval=6)
custom_hooks = [
    dict(type='EMAHook', momentum=0.05, update_buffers=True, priority='ABOVE_NORMAL'),
    dict(type='mmssm.EarlyBirdHook', granularity='channel', prune_ratio=0.3, epsilon=0.1, window=3, score='auto',
         l1_lambda=1e-4, scope='layer', log_per_layer=False),
]
