# The UperNet + MambaVision-T of upernet_mambavision-t_16xb1_ade20k.py trained on the generated demo data (ADE20K
# layout, 128x128 images of 4 object classes on textured backgrounds; make it with tools/misc/make_demo_data.py
# --tasks seg), with a schedule that fits a CPU. Data and schedule differ from the real config, and the windows:
# (8, 4) make the 8x8 and 4x4 hybrid-stage maps of a 128x128 crop one window each, as (64, 32) do for the 32x32 and
# 16x16 maps of the recipe's 512x512 crops (those windows would pad a 128x128 crop's maps to 64x64 and 32x32).
_base_ = './upernet_mambavision-t_16xb1_ade20k.py'

data_root = 'data/demo/ade/ADEChallengeData2016'
crop_size = (128, 128)
# mmseg's ADE20KDataset accepts only ADE20K's own class names; BaseSegDataset (its parent) reads the same layout
# with these (the values of mmssm.datasets.demo_data.DEMO_METAINFO['seg']).
metainfo = dict(classes=('background', 'disc', 'ring', 'square', 'triangle'),
                palette=[(128, 128, 128), (220, 40, 40), (235, 200, 30), (40, 170, 60), (40, 90, 220)])
demo_dataset = dict(_delete_=True, type='BaseSegDataset', data_root=data_root, metainfo=metainfo,
                    img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=4, num_workers=2, persistent_workers=True,
    dataset=dict(**demo_dataset, data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=2, persistent_workers=True,
    dataset=dict(**demo_dataset, data_prefix=dict(img_path='images/validation',
                                                  seg_map_path='annotations/validation'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(window_size=(8, 8, 8, 4)),
    decode_head=dict(num_classes=5),
    auxiliary_head=dict(num_classes=5))

# schedule: 300 iterations (6 epochs of the 200 training images), a higher learning rate than the recipe's
# fine-tuning one, since the demo trains from scratch
max_iters = 300
optim_wrapper = dict(optimizer=dict(lr=6e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=30, end=max_iters, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
