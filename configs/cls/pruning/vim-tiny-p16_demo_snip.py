# One-shot SNIP (|w * grad|, gradients summed over 4 batches) of Vim-T on the demo data (CPU) before the first
# iteration, 50% layer-wise; the mask is kept for the rest of training. criterion='grad' gives the study's |grad|.
_base_ = '../vim-tiny-p16_demo.py'

custom_hooks = [
    # an EMA that follows the weights within ~20 iterations (the base's 4e-5 stays at the initial weights over a
    # 125-iteration run, and validation would measure the masked initial weights)
    dict(type='EMAHook', momentum=0.05, priority='ABOVE_NORMAL'),
    dict(type='mmssm.GradientSaliencyHook', target_sparsity=0.5, criterion='snip', num_batches=4, at_iter=0,
         scope='layer', log_per_layer=False),
]
