# The Cascade Mask R-CNN + MambaVision-T of cascade-mask-rcnn_mambavision-t_fpn_3x_coco.py on the generated
# COCO-style demo data (4 object classes, 128x128 images; make it with tools/misc/make_demo_data.py --tasks det),
# sized for a CPU. Data and schedule differ, and what a CPU cannot afford at the recipe's sizes:
# - windows (8, 4): the 8x8 and 4x4 hybrid-stage maps of a 128x128 image are one window each, as (112, 56) make the
#   maps of a COCO image (the recipe's windows would pad these maps to 112x112 and 56x56);
# - 64 sampled RoIs per image in training (512 in the recipe) and 100 proposals per image in testing (1000): the
#   demo images hold a few objects, and each RoI costs three stages of four 3x3 convolutions.
_base_ = './cascade-mask-rcnn_mambavision-t_fpn_3x_coco.py'

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

# the cascade's three box heads and RoI samplers of the recipe (lists replace, not merge, in a child config), with
# 4 classes and 64 RoIs
box_head = dict(
    type='ConvFCBBoxHead', num_shared_convs=4, num_shared_fcs=1, in_channels=256, conv_out_channels=256,
    fc_out_channels=1024, roi_feat_size=7, num_classes=4, reg_class_agnostic=False, reg_decoded_bbox=True,
    norm_cfg=dict(type='SyncBN', requires_grad=True),
    loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
    loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
target_stds = ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067])
rcnn_train = dict(
    sampler=dict(type='RandomSampler', num=64, pos_fraction=0.25, neg_pos_ub=-1, add_gt_as_proposals=True),
    mask_size=28, pos_weight=-1, debug=False)
iou_thresholds = (0.5, 0.6, 0.7)
model = dict(
    backbone=dict(window_size=(8, 8, 8, 4)),
    roi_head=dict(
        bbox_head=[dict(box_head, bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=stds))
                   for stds in target_stds],
        mask_head=dict(num_classes=4)),
    train_cfg=dict(rcnn=[
        dict(rcnn_train, assigner=dict(type='MaxIoUAssigner', pos_iou_thr=iou, neg_iou_thr=iou, min_pos_iou=iou,
                                       match_low_quality=False, ignore_iof_thr=-1))
        for iou in iou_thresholds]),
    test_cfg=dict(rpn=dict(nms_pre=100, max_per_img=100)))

# schedule: 6 epochs of the 200 training images, lr 3e-4 (from scratch), 50 warm-up iterations
optim_wrapper = dict(optimizer=dict(lr=3e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=6, by_epoch=True, milestones=[5], gamma=0.1),
]
train_cfg = dict(max_epochs=6, val_interval=6)
default_hooks = dict(logger=dict(interval=10))
