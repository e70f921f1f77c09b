# The Mask R-CNN + Vim-T of mask-rcnn_vim-t_fpn_1x_coco.py on the generated COCO-style demo data (4 object classes,
# 128x128 images; make it with tools/misc/make_demo_data.py --tasks det), with a schedule for a CPU. Only data and
# schedule differ.
_base_ = './mask-rcnn_vim-t_fpn_1x_coco.py'

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
model = dict(roi_head=dict(bbox_head=dict(num_classes=4), mask_head=dict(num_classes=4)))

# schedule: 6 epochs of the 200 training images
optim_wrapper = dict(optimizer=dict(lr=3e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=6, by_epoch=True, milestones=[5], gamma=0.1),
]
train_cfg = dict(max_epochs=6, val_interval=6)
default_hooks = dict(logger=dict(interval=10))
