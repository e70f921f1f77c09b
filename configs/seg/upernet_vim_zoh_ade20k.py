# UperNet with a Vim-T backbone on ADE20K, 512x512 crops, 160k iterations, 8 GPUs x 2 images, AdamW with
# layer-wise lr decay. The backbone's selective scan uses zero-order hold (Mamba's; loads Vim weights unchanged);
# the sibling configs upernet_vim_<method>_ade20k.py change only the discretization.
# Data: data/ade/ADEChallengeData2016 in MMSegmentation's layout.
# ImageNet weights: convert an original Vim-T checkpoint with tools/model_converters/vim2mmssm.py --backbone-only
# and pass it as `--cfg-options model.backbone.init_cfg.checkpoint=PATH`, or in a child config as
# `model = dict(backbone=dict(init_cfg=dict(checkpoint=PATH)))`. checkpoint=None (here) trains from scratch.
_base_ = [
    'mmseg::_base_/models/upernet_mae.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['mmssm.models', 'mmssm.engine'], allow_failed_imports=False)

crop_size = (512, 512)
embed_dims = 192
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmssm.Vim',
        arch='tiny',
        img_size=crop_size,
        patch_size=16,
        cls_token='middle',
        out_type='featmap',
        out_indices=(5, 11, 17, 23),
        drop_path_rate=0.1,
        discretization='zoh',
        init_cfg=dict(type='Pretrained', checkpoint=None)),  # None: from scratch; a path: see the header
    neck=dict(
        _delete_=True,
        type='mmssm.PlainPyramidNeck',
        in_channels=embed_dims,
        scales=(4, 2, 1, 0.5),
        norm_cfg=norm_cfg),
    # head widths of the Vim paper's segmentation model (Vim-Ti + UperNet, 13M parameters in all)
    decode_head=dict(in_channels=[embed_dims] * 4, channels=embed_dims, num_classes=150, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=embed_dims, channels=embed_dims, num_classes=150, norm_cfg=norm_cfg),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)),
)

no_decay = dict(decay_mult=0.0)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='mmssm.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        layer_decay_rate=0.92,
        flat_decay_mult=0.0,
        custom_keys={'.cls_token': no_decay, '.pos_embed': no_decay, '.A_log': no_decay, '.A_b_log': no_decay}),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
