# Vim-B on ImageNet-1k. The Vim repository publishes no Vim-B training script; this keeps Vim-S's recipe
# (8 GPUs x 64 images, lr 1e-3) with DeiT-B's drop path 0.1.
_base_ = './vim-small-p16_8xb64_in1k.py'

model = dict(backbone=dict(arch='base', drop_path_rate=0.1), head=dict(in_channels=768))
