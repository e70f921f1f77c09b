# The real Vim-T classification config, shrunk for CPU tests of tools/train.py: test arch, 32x32 images in an
# ImageNet-style folder (data_root given on the command line), no random augmentation, so that runs are
# reproducible step by step.
_base_ = ['../../../configs/cls/vim-tiny-p16_8xb128_in1k.py']

model = dict(
    backbone=dict(arch='test', img_size=32, patch_size=8, drop_path_rate=0.0),
    head=dict(in_channels=32, num_classes=3),
    train_cfg=dict(_delete_=True))
data_preprocessor = dict(num_classes=3)
pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(32, 32)), dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(_delete_=True, type='CustomDataset', data_root='data/tiny_cls', data_prefix='train',
                 pipeline=pipeline))
val_dataloader = None
val_evaluator = None
val_cfg = None
test_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(_delete_=True, type='CustomDataset', data_root='data/tiny_cls', data_prefix='train',
                 pipeline=pipeline))
test_evaluator = dict(type='Accuracy', topk=(1, ))
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=0)]
train_cfg = dict(by_epoch=True, max_epochs=4, val_interval=100)
custom_hooks = []
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=-1))
randomness = dict(seed=0, deterministic=False)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0))
auto_scale_lr = dict(enable=False)
