# Cascade Mask R-CNN + MambaVision-S on COCO as cascade-mask-rcnn_mambavision-t_fpn_3x_coco.py (NVlabs/MambaVision
# object_detection/configs/mamba_vision/cascade_mask_rcnn_mamba_vision_small_3x_coco.py: the same recipe, lr 1e-4).
# ImageNet weights: mambavision_small_1k.pth.tar, converted as the T config's header says.
_base_ = './cascade-mask-rcnn_mambavision-t_fpn_3x_coco.py'

model = dict(backbone=dict(arch='small'), neck=dict(in_channels=[96, 192, 384, 768]))
