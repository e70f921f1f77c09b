# UperNet with a PlainMamba-L1 backbone on ADE20K, the official recipe (ChenhongyiYang/PlainMamba
# downstream/mmsegmentation/plain_mamba_seg_configs/l1_upernet.py, MMSegmentation 0.x) in MMSegmentation 1.x terms:
# - backbone: the outputs of layers 6/12/18/24 (out_indices 5, 11, 17, 23), each an NCHW map at stride 16; the last
#   through the final norm, the others through their own LayerNorm; drop path 0.1. No neck: UPerHead takes the four
#   stride-16 maps as they are (the official neck=None).
# - heads: UPerHead (512 channels) on all four maps, FCN auxiliary head (256 channels, weight 0.4) on the last.
# - optimizer: AdamW lr 6e-5, weight decay 0.01, none on norms, pos_embed, A_log, D and direction_Bs.
# - schedule: 160k iterations, 8 GPUs x 2 images, linear warm-up over 1500 iterations from 1e-6 x lr times a poly
#   decay (power 1, to 0) from iteration 0 (mmcv's warm-up wraps its poly policy); whole-image inference.
# Data: data/ade/ADEChallengeData2016 in MMSegmentation's layout.
# ImageNet weights: convert an official PlainMamba checkpoint with tools/model_converters/plainmamba2mmssm.py
# --backbone-only and pass it as `--cfg-options model.backbone.init_cfg.checkpoint=PATH`, or in a child config as
# `model = dict(backbone=dict(init_cfg=dict(checkpoint=PATH)))`. checkpoint=None (here) trains from scratch.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['mmssm.models', 'mmssm.engine'], allow_failed_imports=False)

crop_size = (512, 512)
embed_dims = 192
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmssm.PlainMamba',
        arch='l1',
        img_size=224,  # the grid of the ImageNet position embedding; resized on the fly to each crop
        out_type='featmap',
        out_indices=(5, 11, 17, 23),
        drop_path_rate=0.1,
        discretization='zoh',
        init_cfg=dict(type='Pretrained', checkpoint=None)),  # None: from scratch; a path: see the header
    decode_head=dict(in_channels=[embed_dims] * 4, channels=512, num_classes=150),
    auxiliary_head=dict(in_channels=embed_dims, in_index=3, channels=256, num_classes=150),
    test_cfg=dict(mode='whole'),
)

no_decay = dict(decay_mult=0.0)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'norm': no_decay, '.pos_embed': no_decay, '.A_log': no_decay, '.D': no_decay,
                                    '.direction_Bs': no_decay}),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=160000, by_epoch=False),
]
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
train_cfg = dict(val_interval=8000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=8000))
auto_scale_lr = dict(enable=False, base_batch_size=16)
