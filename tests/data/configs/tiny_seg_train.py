# The real Vim UperNet config upernet_vim_bilinear_ade20k.py (a child of upernet_vim_zoh_ade20k.py), shrunk for CPU
# tests of tools/train.py: test arch, 32x32 images in an ADE20K-style folder (data_root given on the command line),
# one iteration at lr 0, so that the saved weights are the initial ones (tests/test_tools/test_backbone_checkpoint.py).
_base_ = ['../../../configs/seg/upernet_vim_bilinear_ade20k.py']

crop_size = (32, 32)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch='test', img_size=crop_size, patch_size=8, out_indices=(0, 0, 1, 1), drop_path_rate=0.0),
    neck=dict(in_channels=32, norm_cfg=norm_cfg),
    decode_head=dict(in_channels=[32] * 4, channels=16, num_classes=3, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=32, channels=16, num_classes=3, norm_cfg=norm_cfg),
    test_cfg=dict(mode='whole'))
pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=False),
    dataset=dict(_delete_=True, type='BaseSegDataset', data_root='data/tiny_seg',
                 data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
                 img_suffix='.png', seg_map_suffix='.png', reduce_zero_label=True,
                 metainfo=dict(classes=('a', 'b', 'c')), pipeline=pipeline))
val_dataloader = None
val_evaluator = None
val_cfg = None
test_dataloader = None
test_evaluator = None
test_cfg = None
train_cfg = dict(type='IterBasedTrainLoop', max_iters=1, val_interval=100)
optim_wrapper = dict(optimizer=dict(lr=0.0))
param_scheduler = []
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(by_epoch=False, interval=1),
                     visualization=dict(draw=False))
randomness = dict(seed=0)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0))
