"""The demo datasets that mmssm generates itself (ADE20K, COCO and ImageNet layouts)."""
