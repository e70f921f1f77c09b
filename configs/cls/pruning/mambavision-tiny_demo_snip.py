# One-shot SNIP (|w * grad|, gradients summed over 4 batches) of MambaVision-T on the demo data (CPU) before the first
# iteration, 50% of the Linear/Conv weights layer-wise, unstructured; the mask is kept for the rest of training.
# criterion='grad' gives the study's |grad|; granularity='channel' scores whole units instead. See docs/pruning.md.
_base_ = '../mambavision-tiny_demo.py'

custom_hooks = [
    dict(type='EMAHook', momentum=0.05, update_buffers=True, priority='ABOVE_NORMAL'),
    dict(type='mmssm.GradientSaliencyHook', target_sparsity=0.5, criterion='snip', num_batches=4, at_iter=0,
         scope='layer', log_per_layer=False),
]
