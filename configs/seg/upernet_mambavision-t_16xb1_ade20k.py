# UperNet with a MambaVision-T backbone on ADE20K, 512x512 crops, 160k iterations, 16 GPUs x 1 image: the official
# recipe (NVlabs/MambaVision semantic_segmentation/configs/mamba_vision/mamba_vision_160k_ade20k-512x512_tiny.py, on
# MMSegmentation's UperNet-Swin base). AdamW lr 5e-5, weight decay 0.01 (none on parameters whose name holds 'norm'),
# warm-up over 1500 iterations from 1e-6 of the lr, then linear decay to 0; whole-image testing. The official runs
# use fp16 AMP: train with --amp on GPUs.
# Windows (8, 8, 64, 32) as the official config: at 512x512 the stride-16 (32x32) and stride-32 (16x16) maps are each
# one window, zero-padded to 64x64 and 32x32 as the official model pads them.
# Drop path 0.2: the official dense backbone (MM_mamba_vision) drops its config's drop_path_rate (0.3 here) and
# builds the model with the default 0.2, which is what the released results were trained with.
# Data: data/ade/ADEChallengeData2016 in MMSegmentation's layout.
# ImageNet weights: convert an official checkpoint (mambavision_tiny_1k.pth.tar) with
# tools/model_converters/mambavision2mmssm.py --backbone-only and pass it as
# `--cfg-options model.backbone.init_cfg.checkpoint=PATH`, or in a child config as
# `model = dict(backbone=dict(init_cfg=dict(checkpoint=PATH)))`. checkpoint=None (here) trains from scratch.
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['mmssm.models', 'mmssm.engine'], allow_failed_imports=False)

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='mmssm.MambaVision',
        arch='tiny',
        window_size=(8, 8, 64, 32),
        out_indices=(0, 1, 2, 3),
        out_norm='ln2d',
        drop_path_rate=0.2,
        discretization='zoh',
        init_cfg=dict(type='Pretrained', checkpoint=None)),  # None: from scratch; a path: see the header
    decode_head=dict(in_channels=[80, 160, 320, 640], num_classes=150),
    auxiliary_head=dict(in_channels=320, num_classes=150))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
train_dataloader = dict(batch_size=1)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
