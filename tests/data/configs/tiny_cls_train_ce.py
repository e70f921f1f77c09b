# tiny_cls_train.py with plain cross-entropy: LabelSmoothLoss checks integer labels with .item(), which a CUDA
# graph cannot hold (tools/train.py --cuda-graph's GPU test trains this one).
_base_ = ['./tiny_cls_train.py']

model = dict(head=dict(loss=dict(_delete_=True, type='CrossEntropyLoss', loss_weight=1.0)))
