# MambaVision-T on ImageNet-1k with the official recipe: NVlabs/MambaVision mambavision/configs/mambavision_tiny_1k.yaml
# as mambavision/train.py runs it (timm). 128 images per GPU on 32 GPUs (4096, the paper's batch); LAMB lr 5e-3,
# betas (0.9, 0.999), eps 1e-8, weight decay 0.05 on every parameter of two or more dimensions (timm's rule: none on
# norms, biases, D, layer scales; A_log is decayed); gradients clipped at norm 5; warm-up from 1e-6 over 20 epochs,
# cosine to 5e-6 at epoch 310, then 10 epochs at 5e-6 (320 in all); label smoothing 0.1, Mixup 0.8 / CutMix 1.0 (one
# of the two per batch), RandAugment m9 mstd0.5 (increasing), random erasing 0.25 (per-pixel noise); EMA of the
# weights (decay 0.9998, buffers included); drop path 0.2; evaluation at crop fraction 1.0, bicubic. The official
# runs use fp16 AMP: train with --amp on GPUs.
# Not reproduced: the official runs add MESA (a distillation loss from the EMA model; for T weight 0.5 from 25 % of
# training on), which MMPretrain does not have; timm picks bilinear or bicubic at random for each training crop, here
# always bicubic.
# Data: data/imagenet/{train,val} in MMPretrain's ImageNet layout.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmssm.models', 'mmssm.engine'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmssm.MambaVision',
        arch='tiny',
        out_indices=(3, ),
        out_norm='bn',  # the classifier's BatchNorm on the last stage, before the pooling
        drop_path_rate=0.2,
        discretization='zoh'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=640,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02)),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)

# evaluation as the released models' (timm's crop_pct 1.0): shorter edge to 224 / crop_pct, centre crop 224
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=224, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=128, num_workers=8)
val_dataloader = dict(batch_size=128, num_workers=8, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='Lamb', lr=5e-3, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0),
    clip_grad=dict(max_norm=5.0, norm_type=2),
)
# timm's CosineLRScheduler (per iteration, warm-up not as a prefix): the cosine runs from epoch 0 to 310 and the
# warm-up replaces its first epochs. Both schedulers from epoch 0 reproduce it within 1 % of the peak lr.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / 5e-3, by_epoch=True, begin=0, end=20, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=5e-6, by_epoch=True, begin=0, end=310, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=320, val_interval=1)  # 310 + timm's 10 cool-down epochs at 5e-6
val_cfg = dict()
test_cfg = dict()
custom_hooks = [dict(type='EMAHook', momentum=2e-4, update_buffers=True, priority='ABOVE_NORMAL')]
auto_scale_lr = dict(base_batch_size=4096)
