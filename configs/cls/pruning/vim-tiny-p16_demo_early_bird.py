# Early-bird ticket of Vim-T on the demo data (CPU): output-channel L1 scores (Vim has no BatchNorm), 30% of the
# channels of each layer masked each epoch (the classifier head excluded); the ticket is drawn once the newest mask
# is within epsilon=0.1 (normalized Hamming distance) of the previous 2 (window=3: 5 is too long for a CPU run).
_base_ = '../vim-tiny-p16_demo.py'

train_cfg = dict(max_epochs=6, val_interval=6)
custom_hooks = [
    # an EMA that follows the weights within ~20 iterations (the base's 4e-5 stays at the initial weights over a
    # 125-iteration run, and validation would measure the masked initial weights)
    dict(type='EMAHook', momentum=0.05, priority='ABOVE_NORMAL'),
    dict(type='mmssm.EarlyBirdHook', prune_ratio=0.3, epsilon=0.1, window=3, score='auto', scope='layer',
         exclude=['*norm*', '*A_log*', '*.D', '*bias*', '*pos_embed*', '*cls_token*', 'head.*'],
         log_per_layer=False),
]
