# upernet_plainmamba-l1_8xb2_ade20k.py with PlainMamba-L2 (embed 384, depth 24): the official l2_upernet.py differs
# only in the arch, the widths and drop path 0.2.
_base_ = './upernet_plainmamba-l1_8xb2_ade20k.py'

embed_dims = 384
model = dict(
    backbone=dict(arch='l2', drop_path_rate=0.2),
    decode_head=dict(in_channels=[embed_dims] * 4),
    auxiliary_head=dict(in_channels=embed_dims))
