# Vim-T on ImageNet-1k, the Vim paper's recipe (DeiT's): 300 epochs, 8 GPUs x 128 images, AdamW lr 1e-3
# (5e-4 x 1024 / 512), weight decay 0.05, 5 warm-up epochs then cosine, label smoothing 0.1, Mixup 0.8, CutMix 1.0,
# RandAugment and random erasing (MMPretrain's Swin/DeiT pipeline), EMA of the weights, drop path 0.1.
# Data: data/imagenet/{train,val} in MMPretrain's ImageNet layout.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmssm.models', 'mmssm.engine'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmssm.Vim',
        arch='tiny',
        img_size=224,
        patch_size=16,
        bidirectional=True,
        cls_token='middle',
        out_type='cls_token',
        drop_path_rate=0.1,
        discretization='zoh'),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=192,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02)),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)

train_dataloader = dict(batch_size=128)

# A_log / A_b_log (the SSM's decay rates), D, position embedding and class token get no weight decay, as in Vim.
no_decay = dict(decay_mult=0.0)
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0,
        custom_keys={'.cls_token': no_decay, '.pos_embed': no_decay, '.A_log': no_decay, '.A_b_log': no_decay}),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
custom_hooks = [dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL')]
auto_scale_lr = dict(base_batch_size=1024)
