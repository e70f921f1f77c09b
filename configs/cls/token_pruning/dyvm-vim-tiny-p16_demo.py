# DyVM on the generated ImageNet-style demo data (4 classes of 64x64 images; make it with
# tools/misc/make_demo_data.py --tasks cls), CPU-sized: a tiny Vim (embed 64, depth 4, patch 16: 16 patch tokens),
# pruning before blocks 1/2/3 (depth 24's 6/12/18 scaled) keeping int(0.7^s * 16) = 11, 7, 5 patch tokens, gates
# on. The teacher is the same tiny Vim with teacher_checkpoint=None, i.e. random (there is no trained demo
# checkpoint): the run exercises the whole DyVM training path, not a meaningful distillation. Give a trained
# tiny-Vim classifier with --cfg-options model.teacher_checkpoint=PATH for one.
_base_ = './dyvm-vim-tiny-p16_in1k.py'

data_root = 'data/demo/imagenet'
classes = ('disc', 'ring', 'square', 'triangle')  # mmssm.datasets.demo_data.DEMO_CLS_CLASSES
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64, crop_ratio_range=(0.5, 1.0)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=64), dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=16, num_workers=2,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root, data_prefix='train',
                 metainfo=dict(classes=classes), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16, num_workers=2,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root, data_prefix='val',
                 metainfo=dict(classes=classes), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

tiny = dict(arch=dict(_delete_=True, embed_dims=64, depth=4, d_state=8, expand=2), img_size=64, patch_size=16)
model = dict(
    backbone=dict(**tiny, pruning_layers=(1, 2, 3), keep_ratio=0.7),
    head=dict(num_classes=4, in_channels=64),
    teacher=dict(backbone=dict(**tiny), head=dict(num_classes=4, in_channels=64)),
    teacher_checkpoint=None)
data_preprocessor = dict(num_classes=4)

# schedule: 3 epochs of the 400 training images
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1, end=3),
]
train_cfg = dict(by_epoch=True, max_epochs=3, val_interval=3)
custom_hooks = [dict(type='EMAHook', momentum=0.05, priority='ABOVE_NORMAL')]  # a 75-iteration run
default_hooks = dict(logger=dict(interval=10))
auto_scale_lr = dict(base_batch_size=16)
