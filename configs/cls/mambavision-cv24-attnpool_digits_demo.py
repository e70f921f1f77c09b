# vim_ssm_cv24's MambaVision variant with attention pooling in both places, attention-pool downsampling between
# stages (downsample='attention_pool') and the attention-pooling classification head (mmssm.AttentionPoolingHead),
# trained from scratch on scikit-learn's bundled 8x8 digits (mmssm.DigitsDataset: real data, offline, no files;
# needs `pip install scikit-learn`), upscaled to 32x32. The model and recipe are those of benchmarks/cv24_variants.py
# (docs/benchmarks.md, "cv24 variants on scikit-learn digits"): a 4-stage MambaVision of dims 16-32-64-128, depths
# (1, 1, 2, 2); AdamW lr 2e-3, weight decay 0.05, batch 64, 8 epochs (1 warm-up, cosine to 0); random shifts of up
# to 4 pixels (zero padding). A few minutes on an idle 2-core CPU:
#   python tools/train.py configs/cls/mambavision-cv24-attnpool_digits_demo.py
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['mmssm.models', 'mmssm.datasets'], allow_failed_imports=False)

image_size = 32
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmssm.MambaVision',
        arch=dict(embed_dims=16, stem_channels=16, depths=(1, 1, 2, 2), num_heads=(1, 2, 4, 8),
                  window_size=(8, 8, 2, 1), mlp_ratio=2, layer_scale=None, layer_scale_conv=None,
                  drop_path_rate=0.),
        out_indices=(3, ),
        downsample='attention_pool'),
    head=dict(type='mmssm.AttentionPoolingHead', num_classes=10, in_channels=128,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0)),
)
# the digits' grey levels (the train split's pixel mean and std, 0..255)
data_preprocessor = dict(num_classes=10, mean=[77.9] * 3, std=[82.5] * 3, to_rgb=False)

train_pipeline = [dict(type='RandomCrop', crop_size=image_size, padding=image_size // 8), dict(type='PackInputs')]
test_pipeline = [dict(type='PackInputs')]
digits = dict(type='mmssm.DigitsDataset', seed=0, val_ratio=0.2, image_size=image_size)
train_dataloader = dict(
    batch_size=64, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(digits, split='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=128, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(digits, split='val', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0., by_epoch=True, begin=1, end=8, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=8, val_interval=4)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=8, max_keep_ckpts=1))
randomness = dict(seed=0)
