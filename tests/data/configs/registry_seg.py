# A tiny MMSegmentation config that reaches an mmssm type by its scoped name (tests/test_registry.py).
_base_ = ['mmseg::_base_/models/upernet_vit-b16_ln_mln.py']
custom_imports = dict(imports=['mmssm.models'], allow_failed_imports=False)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    pretrained=None,
    data_preprocessor=dict(size=(64, 64)),
    backbone=dict(img_size=(64, 64), embed_dims=32, num_layers=4, num_heads=2, out_indices=(0, 1, 2, 3)),
    neck=dict(_delete_=True, type='mmssm.PlainPyramidNeck', in_channels=32, scales=(4, 2, 1, 0.5),
              norm_cfg=norm_cfg),
    decode_head=dict(in_channels=[32, 32, 32, 32], channels=16, num_classes=4, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=32, channels=16, num_classes=4, norm_cfg=norm_cfg))
