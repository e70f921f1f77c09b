# Mask R-CNN with a Vim-T backbone on COCO, 1x schedule (12 epochs), 8 GPUs x 2 images, AdamW with layer-wise
# lr decay. Vim's single stride-16 map is turned into strides 4/8/16/32 by mmssm.PlainPyramidNeck, then an FPN.
# Data: data/coco in MMDetection's layout.
# ImageNet weights: convert an original Vim-T checkpoint with tools/model_converters/vim2mmssm.py --backbone-only
# and pass it as `--cfg-options model.backbone.init_cfg.checkpoint=PATH`, or in a child config as
# `model = dict(backbone=dict(init_cfg=dict(checkpoint=PATH)))`. checkpoint=None (here) trains from scratch.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmssm.models', 'mmssm.engine'], allow_failed_imports=False)

embed_dims = 192
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmssm.Vim',
        arch='tiny',
        img_size=224,  # the grid of the ImageNet position embedding; resized on the fly to each image
        patch_size=16,
        cls_token='middle',
        out_type='featmap',
        out_indices=(5, 11, 17, 23),
        drop_path_rate=0.1,
        discretization='zoh',
        init_cfg=dict(type='Pretrained', checkpoint=None)),  # None: from scratch; a path: see the header
    neck=[
        dict(type='mmssm.PlainPyramidNeck', in_channels=embed_dims, scales=(4, 2, 1, 0.5), norm_cfg=norm_cfg),
        dict(type='FPN', in_channels=[embed_dims] * 4, out_channels=256, num_outs=5),
    ],
)

no_decay = dict(decay_mult=0.0)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='mmssm.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        layer_decay_rate=0.9,
        flat_decay_mult=0.0,
        custom_keys={'.cls_token': no_decay, '.pos_embed': no_decay, '.A_log': no_decay, '.A_b_log': no_decay}),
    clip_grad=dict(max_norm=1.0, norm_type=2),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
