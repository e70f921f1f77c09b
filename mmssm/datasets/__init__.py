"""The demo datasets that mmssm generates itself (ADE20K, COCO and ImageNet layouts)."""
from .digits import DIGITS_CLASSES, build_digits_dataset, digits_arrays, digits_split

__all__ = ['DIGITS_CLASSES', 'build_digits_dataset', 'digits_arrays', 'digits_split']
