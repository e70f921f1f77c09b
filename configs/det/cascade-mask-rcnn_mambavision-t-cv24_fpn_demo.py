# cascade-mask-rcnn_mambavision-t_fpn_demo.py (Cascade Mask R-CNN + MambaVision-T on the generated COCO-style demo
# data, CPU-sized) with vim_ssm_cv24's architecture variants in the backbone: shifted-window attention in the hybrid
# stages, 4 register tokens per window, and attention-pool downsampling between stages. Only the backbone options
# differ from the demo config; make the data with tools/misc/make_demo_data.py --tasks det.
_base_ = './cascade-mask-rcnn_mambavision-t_fpn_demo.py'

model = dict(backbone=dict(attention='shifted_window', num_registers=4, downsample='attention_pool'))
