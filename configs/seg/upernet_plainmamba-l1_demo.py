# The UperNet + PlainMamba recipe of upernet_plainmamba-l1_8xb2_ade20k.py on the generated demo data (ADE20K
# layout, 128x128 images of 4 object classes on textured backgrounds; make it with tools/misc/make_demo_data.py
# --tasks seg), with a CPU schedule. Data, schedule and the arch differ: as plainmamba-l1_demo.py, a small PlainMamba
# of L1's layout (one stem conv, dw conv after layer 0) with embed 64 and depth 4, its four layers' maps into UPerHead.
# For L1 itself: --cfg-options model.backbone.arch=l1 "model.backbone.out_indices=[5,11,17,23]"
# "model.decode_head.in_channels=[192,192,192,192]" model.auxiliary_head.in_channels=192.
_base_ = './upernet_plainmamba-l1_8xb2_ade20k.py'

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

embed_dims = 64
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(img_size=crop_size, out_indices=(0, 1, 2, 3), drop_path_rate=0.0,
                  arch=dict(_delete_=True, embed_dims=embed_dims, depth=4, num_convs_patch_embed=1,
                            layers_with_dwconv=(0, ))),
    decode_head=dict(in_channels=[embed_dims] * 4, channels=64, num_classes=5),
    auxiliary_head=dict(in_channels=embed_dims, channels=32, num_classes=5))

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
