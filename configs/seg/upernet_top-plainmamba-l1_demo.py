# ToP-ViM token pruning (mmssm.ToPPlainMamba) in the UperNet + PlainMamba demo (upernet_plainmamba-l1_demo.py):
# after layers 1 and 2 of the demo's 4, keeping 0.54 of the tokens each time (the ratio of the PlainMamba-L3
# schedule of benchmarks/token_pruning_gpu.py), in training and evaluation ('finetune'). Segmentation method: every
# output map is restored to the full grid, a pruned token holding its stream from the layer where it was pruned, so
# UPerHead sees every position. Needs zoh (the hidden-state alignment's gap form is exact there).
_base_ = './upernet_plainmamba-l1_demo.py'

model = dict(
    backbone=dict(type='mmssm.ToPPlainMamba', discretization='zoh',
                  token_pruning=dict(type='mmssm.ToP', layers=(1, 2), keep_ratio=0.54, mode='finetune')))
