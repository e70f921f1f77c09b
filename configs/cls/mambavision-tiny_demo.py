# MambaVision-T of mambavision-tiny_32xb128_in1k.py on the generated ImageNet-style demo data (4 classes of 64x64
# images; make it with tools/misc/make_demo_data.py --tasks cls), with a schedule for a CPU. Only data, schedule and
# the windows differ: at 64x64 the hybrid stages' maps are 4x4 and 2x2, so windows (4, 2) make each one window, as
# (14, 7) do at the recipe's 224x224 (the recipe's windows would pad them to 14x14 and 7x7).
_base_ = './mambavision-tiny_32xb128_in1k.py'

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
model = dict(backbone=dict(window_size=(8, 8, 4, 2)), head=dict(num_classes=4))
data_preprocessor = dict(num_classes=4)

# schedule: 5 epochs of the 400 training images (125 iterations), the recipe's LAMB at its lr; an EMA that follows
# the weights within about 20 iterations (the recipe's 0.9998 would still be near the initial weights)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=5e-6, by_epoch=True, begin=0, end=5, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=5, val_interval=5)
custom_hooks = [dict(type='EMAHook', momentum=0.05, update_buffers=True, priority='ABOVE_NORMAL')]
default_hooks = dict(logger=dict(interval=10))
auto_scale_lr = dict(base_batch_size=16)
