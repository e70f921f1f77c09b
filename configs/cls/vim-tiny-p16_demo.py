# Vim-T of vim-tiny-p16_8xb128_in1k.py on the generated ImageNet-style demo data (4 classes of 64x64 images; make
# it with tools/misc/make_demo_data.py --tasks cls), with a schedule for a CPU. Only data and schedule differ.
_base_ = './vim-tiny-p16_8xb128_in1k.py'

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
model = dict(head=dict(num_classes=4))
data_preprocessor = dict(num_classes=4)

# schedule: 5 epochs of the 400 training images
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1),
]
train_cfg = dict(by_epoch=True, max_epochs=5, val_interval=5)
# an EMA that follows the weights within about 20 iterations: the recipe's 4e-5 would leave the evaluated EMA copy
# at the initial weights over these 125 iterations
custom_hooks = [dict(type='EMAHook', momentum=0.05, priority='ABOVE_NORMAL')]
default_hooks = dict(logger=dict(interval=10))
