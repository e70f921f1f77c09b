# ToP-ViM token pruning (mmssm.ToPVim) in the UperNet + Vim-T demo (upernet_vim_bilinear_demo.py: generated ADE20K-
# layout data, CPU-sized schedule), with zero-order hold since ToP's hidden-state alignment (the scan's gap form)
# is exact only there. Prunes after blocks 10 and 20 keeping 0.8 (the ToP-ViM Vim-T run) in training and
# evaluation ('finetune'). Segmentation method: the 'featmap' outputs are restored to the full grid, a pruned token
# holding its residual stream from the block where it was pruned, so the neck and heads see every position.
_base_ = './upernet_vim_bilinear_demo.py'

model = dict(
    backbone=dict(type='mmssm.ToPVim', discretization='zoh',
                  token_pruning=dict(type='mmssm.ToP', layers=(10, 20), keep_ratio=0.8, mode='finetune')))
