# A tiny MMDetection config that reaches an mmssm type by its scoped name (tests/test_registry.py): a plain
# stride-16 backbone map, turned into a pyramid by mmssm's neck, then mmdet's FPN.
_base_ = ['mmdet::_base_/models/retinanet_r50_fpn.py']
custom_imports = dict(imports=['mmssm.models'], allow_failed_imports=False)
model = dict(
    backbone=dict(depth=18, base_channels=8, num_stages=3, out_indices=(2,), strides=(1, 2, 2),
                  dilations=(1, 1, 1), init_cfg=None),
    neck=[
        dict(type='mmssm.PlainPyramidNeck', in_channels=32, scales=(4, 2, 1, 0.5)),
        dict(type='FPN', in_channels=[32, 32, 32, 32], out_channels=16, start_level=1,
             add_extra_convs='on_input', num_outs=5),
    ],
    bbox_head=dict(num_classes=3, in_channels=16, feat_channels=16, stacked_convs=1))
