# MambaVision-S on ImageNet-1k: the recipe of mambavision-tiny_32xb128_in1k.py with the official small run's settings
# (NVlabs/MambaVision mambavision/configs/mambavision_small_1k.yaml: the same optimizer, schedule and augmentation;
# drop path 0.2, the model's default). Evaluation at the released model's crop fraction 0.93 (shorter edge to
# 224 / 0.93 = 240, centre crop 224). Not reproduced: MESA (weight 1.0 for S, from 25 % of training on).
_base_ = './mambavision-tiny_32xb128_in1k.py'

model = dict(backbone=dict(arch='small', drop_path_rate=0.2), head=dict(in_channels=768))

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=240, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
