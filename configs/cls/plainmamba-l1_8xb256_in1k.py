# PlainMamba-L1 on ImageNet-1k, the official recipe (ChenhongyiYang/PlainMamba plain_mamba_l1_in1k_300e.py):
# 300 epochs, 8 GPUs x 256 images, AdamW lr 2e-3 (5e-4 x 2048 / 512), weight decay 0.05 (none on norms, biases,
# pos_embed, A_log, D, direction_Bs), 15 warm-up epochs then cosine, grad clip 5, label smoothing 0.1, Mixup 0.8 /
# CutMix 1.0, Swin's RandAugment + random-erasing pipeline, drop path 0.2, mean-pooled tokens into a linear head.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmssm.models', 'mmssm.engine'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='mmssm.PlainMamba', arch='l1', img_size=224, out_type='avg_featmap', drop_path_rate=0.2,
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

train_dataloader = dict(batch_size=256)
val_dataloader = dict(batch_size=256)
optim_wrapper = dict(
    optimizer=dict(lr=5e-4 * 256 * 8 / 512),
    clip_grad=dict(max_norm=5.0),
    paramwise_cfg=dict(
        norm_decay_mult=0.0, bias_decay_mult=0.0,
        custom_keys={'.pos_embed': dict(decay_mult=0.0), '.A_log': dict(decay_mult=0.0),
                     '.D': dict(decay_mult=0.0), '.direction_Bs': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=15, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=15),
]
auto_scale_lr = dict(base_batch_size=2048)
