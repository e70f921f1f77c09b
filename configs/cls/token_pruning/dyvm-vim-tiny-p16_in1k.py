# DyVM (Dynamic Vision Mamba) fine-tuning of Vim-T on ImageNet-1k: token pruning before blocks 6/12/18 keeping
# int(0.9^s * 196) patch tokens at stage s, per-sample gates on each block's two scan directions (target: 80 % on),
# and distillation from the dense Vim-T. The DyVM repository's Vim-T script: 30 epochs, 4 GPUs x 128 images,
# AdamW lr 3e-5 (its 3e-5 x 512 / 512), weight decay 1e-8, 5 warm-up epochs from 1e-5, cosine to 1e-6, no drop
# path, Mixup 0.8 / CutMix 1.0 / label smoothing 0.1, EMA 0.99996; loss weights: token and block keep ratio 10,
# logit KL and token MSE 0.5. Not reproduced: its repeated augmentation and the timm cosine's exact shape.
# Give the dense Vim-T classifier (tools/model_converters/vim2mmssm.py output, or a checkpoint of
# ../vim-tiny-p16_8xb128_in1k.py) with --cfg-options model.teacher_checkpoint=PATH: it is the frozen teacher and,
# by init_from_teacher, the student's starting point. See docs/token_pruning.md.
_base_ = '../vim-tiny-p16_8xb128_in1k.py'

vim_tiny = dict(arch='tiny', img_size=224, patch_size=16, bidirectional=True, cls_token='middle',
                out_type='cls_token', discretization='zoh')
head = dict(
    type='LinearClsHead',
    num_classes=1000,
    in_channels=192,
    loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
    init_cfg=dict(type='TruncNormal', layer='Linear', std=.02))
model = dict(
    _delete_=True,
    type='mmssm.DyVMClassifier',
    backbone=dict(type='mmssm.DyVim', **vim_tiny, drop_path_rate=0.0, pruning_layers=(6, 12, 18), keep_ratio=0.9,
                  block_selection=True),
    neck=None,
    head=head,
    teacher=dict(type='ImageClassifier', backbone=dict(type='mmssm.Vim', **vim_tiny), neck=None,
                 head=dict(type='LinearClsHead', num_classes=1000, in_channels=192)),
    teacher_checkpoint=None,
    init_from_teacher=True,
    dyvm_loss=dict(token_ratio_weight=10.0, block_ratio_weight=10.0, block_keep_ratio=0.8,
                   logit_distill_weight=0.5, token_distill_weight=0.5),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)

optim_wrapper = dict(optimizer=dict(lr=3e-5, weight_decay=1e-8))
param_scheduler = [
    dict(type='LinearLR', start_factor=1 / 3, by_epoch=True, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=True, begin=5, end=30),
]
train_cfg = dict(by_epoch=True, max_epochs=30, val_interval=1)
auto_scale_lr = dict(base_batch_size=512)
