# PlainMamba-L1's recipe (plainmamba-l1_8xb256_in1k.py) on the generated ImageNet-style demo data (4 classes of 64x64
# images; make it with tools/misc/make_demo_data.py --tasks cls), with a CPU schedule. Data, schedule and the arch
# differ: the full L1 took about 40 s per iteration on a shared 2-core CPU (over an hour for the 125 iterations),
# so the demo trains a small PlainMamba of L1's layout (conv stem with one 3x3 conv, dw conv after layer 0, 7x7
# depthwise conv, d_state 16) with embed 64 and depth 4: about 2-3 s per iteration there. For L1 itself, pass
# --cfg-options model.backbone.arch=l1 model.head.in_channels=192.
_base_ = './plainmamba-l1_8xb256_in1k.py'

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
model = dict(
    backbone=dict(img_size=64, arch=dict(_delete_=True, embed_dims=64, depth=4, num_convs_patch_embed=1,
                                         layers_with_dwconv=(0, ))),
    head=dict(num_classes=4, in_channels=64))
data_preprocessor = dict(num_classes=4)

# schedule: 5 epochs of the 400 training images
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1),
]
train_cfg = dict(by_epoch=True, max_epochs=5, val_interval=5)
default_hooks = dict(logger=dict(interval=10))
