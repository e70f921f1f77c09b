# UperNet + MambaVision-S on ADE20K as upernet_mambavision-t_16xb1_ade20k.py, with the official small run's settings
# (NVlabs/MambaVision semantic_segmentation/configs/mamba_vision/mamba_vision_160k_ade20k-512x512_small.py): 8 GPUs x
# 2 images, AdamW lr 6e-5, windows (8, 8, 160, 56) (at 512x512 one window per hybrid-stage map, padded), drop path
# 0.2 (the official config's 0.7 does not reach its model; see the T config).
# ImageNet weights: mambavision_small_1k.pth.tar, converted as the T config's header says.
_base_ = './upernet_mambavision-t_16xb1_ade20k.py'

model = dict(
    backbone=dict(arch='small', window_size=(8, 8, 160, 56), drop_path_rate=0.2),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
optim_wrapper = dict(optimizer=dict(lr=6e-5))
train_dataloader = dict(batch_size=2)
