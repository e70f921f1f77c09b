# UperNet + Vim-T on ADE20K as upernet_vim_zoh_ade20k.py, with the selective scan discretized by
# a cubic (higher-order) hold of the inputs; see docs/discretization.md.
_base_ = './upernet_vim_zoh_ade20k.py'

model = dict(backbone=dict(discretization='highorder'))
