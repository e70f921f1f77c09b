# UperNet + Vim-T on ADE20K as hustvl/Vim's own segmentation code trains it (seg/configs/vim/upernet/
# upernet_vim_tiny_24_512_slide_60k.py, run by seg/scripts/ft_vim_tiny_upernet.sh on MMSegmentation 0.29), to
# compare with the Vim paper's Vim-Ti UperNet. upernet_vim_<method>_ade20k.py are mmssm's own recipe. What it does:
# - backbone (VisionMambaSeg): no class token; the maps of blocks 5/11/17/23 are those blocks' mixer outputs, with
#   no residual and no final norm (feature_source='mixer'; the final norm stays unused, hence
#   find_unused_parameters); drop path 0.1 (VisionMamba's default); residual_in_fp32=False. Its fpn1-fpn4
#   (ConvT-BN-GELU-ConvT, ConvT, identity, max-pool) are mmssm.PlainPyramidNeck.
# - heads: UPerHead with 192 channels; FCN auxiliary head on the third map with 256 channels (the BEiT base's).
# - optimizer: AdamW, lr 2e-4 and weight decay 0.1 (the script's overrides of the config's 1e-4 and 0.05). Its
#   LayerDecayOptimizerConstructor (rate 0.92, 24 layers) numbers the layers by 'backbone.blocks.<i>', which Vim's
#   parameters ('backbone.layers.<i>') do not match: only the patch and position embeddings get lr x 0.92^25,
#   everything else the full lr. 1-D parameters (norms, biases, D) have no weight decay, all others (position
#   embedding and A_log included) have it. MMEngine's default constructor with these custom keys does the same.
# - schedule: 60k iterations, 4 GPUs x 8 images, fp32; linear warm-up over 1500 iterations from 1e-6 x lr, times a
#   poly decay (power 1, to 0) that starts at iteration 0, as mmcv's warm-up wraps its poly policy; validation and
#   a checkpoint every 1000 iterations (the best mIoU kept).
# - data: mmseg's ADE20K pipeline (the same in MMSegmentation 1.x); slide inference with 512 crops, stride 341.
# Not reproduced: the script's --deterministic (cudnn's deterministic mode; MMEngine's also makes torch refuse
# non-deterministic CUDA kernels, so it is left out) and Vim's own checkpoint loading. ImageNet weights: as in
# upernet_vim_zoh_ade20k.py (--cfg-options model.backbone.init_cfg.checkpoint=PATH); a converted Vim-T checkpoint
# loads with its class token's position-embedding slot dropped (vim2mmssm.py records where it is).
_base_ = './upernet_vim_zoh_ade20k.py'

model = dict(
    backbone=dict(
        cls_token='none',
        out_type='featmap',
        feature_source='mixer',
        residual_in_fp32=False,
        drop_path_rate=0.1),
    auxiliary_head=dict(channels=256))
find_unused_parameters = True

lr = 2e-4
embedding_lr = dict(lr_mult=0.92**25)  # layer id 0 of 26
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=lr, betas=(0.9, 0.999), weight_decay=0.1),
    paramwise_cfg=dict(
        flat_decay_mult=0.0,
        custom_keys={
            'backbone.patch_embed.projection.weight': embedding_lr,
            'backbone.patch_embed.projection.bias': dict(embedding_lr, decay_mult=0.0),
            'backbone.pos_embed': embedding_lr,
        }),
)
max_iters = 60000
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=max_iters, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=1000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=1000, max_keep_ckpts=4, save_best='mIoU'))
train_dataloader = dict(batch_size=8)
randomness = dict(seed=0)
auto_scale_lr = dict(enable=False, base_batch_size=32)
