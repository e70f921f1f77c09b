# UperNet + Vim-T on ADE20K as upernet_vim_zoh_ade20k.py, with the selective scan discretized by
# classical Runge-Kutta 4; see docs/discretization.md.
_base_ = './upernet_vim_zoh_ade20k.py'

model = dict(backbone=dict(discretization='rk4'))
