# The Mask R-CNN + PlainMamba of mask-rcnn_plainmamba-l1_fpn_1x_coco.py on the generated COCO-style demo data (4
# object classes, 128x128 images; make it with tools/misc/make_demo_data.py --tasks det), with a schedule for a CPU.
# Data, schedule and the arch differ: a small PlainMamba of L1's layout (embed 64, depth 4), as plainmamba-l1_demo.py.
_base_ = './mask-rcnn_plainmamba-l1_fpn_1x_coco.py'

data_root = 'data/demo/coco/'
metainfo = dict(classes=('disc', 'ring', 'square', 'triangle'),  # mmssm.datasets.demo_data.DEMO_DET_CLASSES
                palette=[(220, 40, 40), (235, 200, 30), (40, 170, 60), (40, 90, 220)])
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4, num_workers=2,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=2,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# schedule: 6 epochs of the 200 training images
optim_wrapper = dict(optimizer=dict(lr=3e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=6, by_epoch=True, milestones=[5], gamma=0.1),
]
train_cfg = dict(max_epochs=6, val_interval=6)
default_hooks = dict(logger=dict(interval=10))

embed_dims = 64
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(out_indices=(0, 1, 2, 3), drop_path_rate=0.0,
                  arch=dict(_delete_=True, embed_dims=embed_dims, depth=4, num_convs_patch_embed=1,
                            layers_with_dwconv=(0, ))),
    neck=[
        dict(type='mmssm.PlainPyramidNeck', in_channels=embed_dims, scales=(4, 2, 1, 0.5), norm_cfg=norm_cfg),
        dict(type='FPN', in_channels=[embed_dims] * 4, out_channels=256, num_outs=5, norm_cfg=norm_cfg),
    ],
    roi_head=dict(bbox_head=dict(num_classes=4), mask_head=dict(num_classes=4)))
