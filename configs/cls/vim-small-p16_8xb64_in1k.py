# Vim-S on ImageNet-1k: the Vim repository's Vim-S script (8 GPUs x 64 images, lr 1e-3, drop path 0.05).
_base_ = './vim-tiny-p16_8xb128_in1k.py'

model = dict(backbone=dict(arch='small', drop_path_rate=0.05), head=dict(in_channels=384))
train_dataloader = dict(batch_size=64)
auto_scale_lr = dict(base_batch_size=512)
