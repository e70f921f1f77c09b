# MambaVision-B on ImageNet-1k: the recipe of mambavision-tiny_32xb128_in1k.py with the official base run's settings
# (NVlabs/MambaVision mambavision/configs/mambavision_base_1k.yaml): weight decay 0.075, 35 warm-up epochs, drop path
# 0.3 (the model's default), layer scale 1e-5 in the hybrid stages (the arch's). Evaluation at crop fraction 1.0.
# Not reproduced: MESA (weight 1.0 for B, from 30 % of training on).
_base_ = './mambavision-tiny_32xb128_in1k.py'

model = dict(backbone=dict(arch='base', drop_path_rate=0.3), head=dict(in_channels=1024))

optim_wrapper = dict(optimizer=dict(weight_decay=0.075))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / 5e-3, by_epoch=True, begin=0, end=35, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=5e-6, by_epoch=True, begin=0, end=310, convert_to_iter_based=True),
]
