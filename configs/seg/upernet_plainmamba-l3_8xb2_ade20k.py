# upernet_plainmamba-l1_8xb2_ade20k.py with PlainMamba-L3 (embed 448, depth 36): the official l3_upernet.py differs
# only in the arch, the widths, the outputs (layers 9/18/27/36) and drop path 0.3.
_base_ = './upernet_plainmamba-l1_8xb2_ade20k.py'

embed_dims = 448
model = dict(
    backbone=dict(arch='l3', out_indices=(8, 17, 26, 35), drop_path_rate=0.3),
    decode_head=dict(in_channels=[embed_dims] * 4),
    auxiliary_head=dict(in_channels=embed_dims))
