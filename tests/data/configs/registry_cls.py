# A tiny MMPretrain config that reaches an mmssm type by its scoped name (tests/test_registry.py).
_base_ = ['mmpretrain::_base_/models/vit-base-p16.py']
custom_imports = dict(imports=['mmssm.models'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64),
        img_size=32, patch_size=8, drop_rate=0.0,
        norm_cfg=dict(type='mmssm.RMSNorm', eps=1e-6)),
    head=dict(num_classes=5, in_channels=32))
