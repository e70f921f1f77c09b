# Cascade Mask R-CNN + MambaVision-B on COCO as cascade-mask-rcnn_mambavision-t_fpn_3x_coco.py (NVlabs/MambaVision
# object_detection/configs/mamba_vision/cascade_mask_rcnn_mamba_vision_base_3x_coco.py): AdamW lr 2e-4, layer scale
# 1e-5 in the hybrid stages (the arch's).
# ImageNet weights: mambavision_base_1k.pth.tar, converted as the T config's header says.
_base_ = './cascade-mask-rcnn_mambavision-t_fpn_3x_coco.py'

model = dict(backbone=dict(arch='base'), neck=dict(in_channels=[128, 256, 512, 1024]))
optim_wrapper = dict(optimizer=dict(lr=2e-4))
