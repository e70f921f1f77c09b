# tiny_cls_train_ce.py with gradient clipping (tools/train.py --cuda-graph logs the norm from the graph's output).
_base_ = ['./tiny_cls_train_ce.py']

optim_wrapper = dict(clip_grad=dict(max_norm=0.5))
