# Cascade Mask R-CNN with a MambaVision-T backbone on COCO, 3x schedule (36 epochs), 8 GPUs x 2 images: the official
# recipe (NVlabs/MambaVision object_detection/configs/mamba_vision/cascade_mask_rcnn_mamba_vision_tiny_3x_coco.py),
# which is MMDetection's ConvNeXt cascade config (inherited here) with the backbone swapped: an FPN on the four stage
# maps, three cascade stages of 4conv1fc box heads with GIoU loss, DETR-style multi-scale training with random crops,
# lr steps at epochs 27 and 33 after 1000 warm-up iterations; AdamW lr 1e-4, weight decay 0.05 (none on parameters
# whose name holds 'norm'), no layer-wise decay. The official runs use fp16 AMP: train with --amp on GPUs.
# Windows (8, 8, 112, 56) as the official config: at COCO sizes (up to 800 x 1333) the stride-16 and stride-32 maps
# are each one window, zero-padded as the official model pads them.
# Drop path 0.2: the official dense backbone (MM_mamba_vision) builds its model with the default 0.2 whatever its
# config says (0.2 here; 0.3 for S, 0.5 for B).
# Data: data/coco in MMDetection's layout.
# ImageNet weights: convert an official checkpoint (mambavision_tiny_1k.pth.tar) with
# tools/model_converters/mambavision2mmssm.py --backbone-only and pass it as
# `--cfg-options model.backbone.init_cfg.checkpoint=PATH`, or in a child config as
# `model = dict(backbone=dict(init_cfg=dict(checkpoint=PATH)))`. checkpoint=None (here) trains from scratch.
_base_ = 'mmdet::convnext/cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py'
custom_imports = dict(imports=['mmssm.models', 'mmssm.engine'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmssm.MambaVision',
        arch='tiny',
        window_size=(8, 8, 112, 56),
        out_indices=(0, 1, 2, 3),
        out_norm='ln2d',
        drop_path_rate=0.2,
        discretization='zoh',
        init_cfg=dict(type='Pretrained', checkpoint=None)),  # None: from scratch; a path: see the header
    neck=dict(in_channels=[80, 160, 320, 640]))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.0)}))
