# UperNet + MambaVision-B on ADE20K as upernet_mambavision-t_16xb1_ade20k.py, with the official base run's settings
# (NVlabs/MambaVision semantic_segmentation/configs/mamba_vision/mamba_vision_160k_ade20k-512x512_base.py): 16 GPUs x
# 1 image, AdamW lr 5e-5, windows (8, 8, 64, 32), layer scale 1e-5 in the hybrid stages (the arch's), drop path 0.2
# (the official config's 0.4 does not reach its model; see the T config).
# ImageNet weights: mambavision_base_1k.pth.tar, converted as the T config's header says.
_base_ = './upernet_mambavision-t_16xb1_ade20k.py'

model = dict(
    backbone=dict(arch='base', drop_path_rate=0.2),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
