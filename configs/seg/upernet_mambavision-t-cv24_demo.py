# upernet_mambavision-t_demo.py (UperNet + MambaVision-T on the generated ADE20K-style demo data, CPU-sized) with
# vim_ssm_cv24's architecture variants in the backbone: shifted-window attention in the hybrid stages (alternate
# blocks shift the windows by half a window, Swin-style), 4 register tokens per window, and attention-pool
# downsampling between stages. Only the backbone options differ from the demo config; make the data with
# tools/misc/make_demo_data.py --tasks seg.
_base_ = './upernet_mambavision-t_demo.py'

model = dict(backbone=dict(attention='shifted_window', num_registers=4, downsample='attention_pool'))
