# Mask R-CNN with a PlainMamba-L1 backbone on COCO, 1x schedule (12 epochs), 8 GPUs x 2 images. From the official
# recipe (ChenhongyiYang/PlainMamba downstream/mmdetection/plain_mamba_det_configs/maskrcnn/l1_maskrcnn_1x.py):
# AdamW lr 1e-4, weight decay 0.05 (none on norms, biases, pos_embed, A_log, D, direction_Bs), FPN with SyncBN,
# Shared4Conv1FC box head with SyncBN, drop path 0.1. Not reproduced: the official backbone is a ViT-Adapter around
# PlainMamba (a conv spatial-prior branch and deformable-attention injectors/extractors at layers 6/12/18/24);
# here, as in mask-rcnn_vim-t_fpn_1x_coco.py, the maps of layers 6/12/18/24 (each stride 16) become strides 4/8/16/32
# through mmssm.PlainPyramidNeck (ViTDet's simple pyramid), then the FPN. Expect lower box/mask AP than the paper's.
# Data: data/coco in MMDetection's layout.
# ImageNet weights: convert an official PlainMamba checkpoint with tools/model_converters/plainmamba2mmssm.py
# --backbone-only and pass it as `--cfg-options model.backbone.init_cfg.checkpoint=PATH`, or in a child config as
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
        type='mmssm.PlainMamba',
        arch='l1',
        img_size=224,  # the grid of the ImageNet position embedding; resized on the fly to each image
        out_type='featmap',
        out_indices=(5, 11, 17, 23),
        drop_path_rate=0.1,
        discretization='zoh',
        init_cfg=dict(type='Pretrained', checkpoint=None)),  # None: from scratch; a path: see the header
    neck=[
        dict(type='mmssm.PlainPyramidNeck', in_channels=embed_dims, scales=(4, 2, 1, 0.5), norm_cfg=norm_cfg),
        dict(type='FPN', in_channels=[embed_dims] * 4, out_channels=256, num_outs=5, norm_cfg=norm_cfg),
    ],
    roi_head=dict(bbox_head=dict(type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg)),
)

no_decay = dict(decay_mult=0.0)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'norm': no_decay, 'bias': no_decay, 'pos_embed': no_decay, '.A_log': no_decay,
                                    '.D': no_decay, '.direction_Bs': no_decay}),
)
auto_scale_lr = dict(enable=False, base_batch_size=16)
