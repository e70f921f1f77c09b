# One-shot SNIP (|w * grad|, gradients summed over 4 batches) of Vim-T on the demo data (CPU) before the first
# iteration, 50% layer-wise; the mask is kept for the rest of training. criterion='grad' gives the study's |grad|.
_base_ = '../vim-tiny-p16_demo.py'

custom_hooks = [
    dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL'),
    dict(type='mmssm.GradientSaliencyHook', target_sparsity=0.5, criterion='snip', num_batches=4, at_iter=0,
         scope='layer', log_per_layer=False),
]
