"""``mmssm.DigitsDataset``: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes) as an
MMPretrain dataset, a small real dataset that installs offline (it ships inside the scikit-learn wheel).

The split is a deterministic stratified train/val split by ``seed``; images are upscaled (bilinear) to
``image_size`` and repeated to 3-channel uint8 HxWx3 arrays under ``img``, so the standard MMPretrain pipeline
(``RandomResizedCrop``, ``PackInputs``, ...) runs on them without ``LoadImageFromFile``. MMPretrain and
scikit-learn are imported when the dataset is built, not when ``mmssm.datasets`` is imported."""
import functools

import numpy as np

from mmssm.registry import DATASETS

DIGITS_CLASSES = tuple(str(i) for i in range(10))
SPLITS = ('train', 'val', 'all')


def _sklearn_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError('DigitsDataset needs scikit-learn (its bundled digits data); install it with '
                          '`pip install scikit-learn` (or `pip install -r requirements/tests.txt`).') from error
    digits = load_digits()
    return digits.images, digits.target


def digits_split(split: str = 'train', seed: int = 0, val_ratio: float = 0.2) -> np.ndarray:
    """Indices into the 1797 digits of one split: per class, a ``seed``-shuffled ``round(val_ratio * n)`` go to
    'val' and the rest to 'train' (so both keep the class balance); 'all' is every index in order."""
    if split not in SPLITS:
        raise ValueError(f'DigitsDataset: split must be one of {SPLITS}, got {split!r}.')
    if not 0. < val_ratio < 1.:
        raise ValueError(f'DigitsDataset: val_ratio must be in (0, 1), got {val_ratio!r}.')
    _, labels = _sklearn_digits()
    if split == 'all':
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = int(round(val_ratio * len(members)))
        chosen.append(members[:n_val] if split == 'val' else members[n_val:])
    return np.sort(np.concatenate(chosen))


def digits_arrays(split: str = 'train', seed: int = 0, val_ratio: float = 0.2, image_size: int = 32):
    """(images, labels) of a split: uint8 (n, image_size, image_size, 3) upscaled digits and int64 labels.
    The 0..16 grey levels are scaled to 0..255 first, then resized bilinearly (align_corners=False)."""
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f'DigitsDataset: image_size must be an int >= 8 (the digits are 8x8), got {image_size!r}.')
    import torch
    import torch.nn.functional as F
    images, labels = _sklearn_digits()
    index = digits_split(split, seed, val_ratio)
    grey = torch.from_numpy(images[index] * (255. / 16.)).float().unsqueeze(1)
    if image_size != 8:
        grey = F.interpolate(grey, size=(image_size, image_size), mode='bilinear', align_corners=False)
    grey = grey.round().clamp(0, 255).to(torch.uint8).squeeze(1).numpy()
    return np.repeat(grey[..., None], 3, axis=-1), labels[index].astype(np.int64)


@functools.cache
def _dataset_class():
    from mmpretrain.datasets import BaseDataset

    class DigitsDataset(BaseDataset):
        """scikit-learn's 8x8 digits as an MMPretrain dataset (no files, no download).

        Args:
            split (str): 'train', 'val' or 'all'. Default: 'train'.
            seed (int): seed of the stratified split (the same seed gives the same split). Default: 0.
            val_ratio (float): share of each class that goes to 'val'. Default: 0.2.
            image_size (int): side of the upscaled square images. Default: 32.
            pipeline (list): MMPretrain transforms applied to ``dict(img=HxWx3 uint8, gt_label=int, ...)``.
            **kwargs: BaseDataset's ``test_mode``, ``lazy_init``, ``serialize_data``, ``indices``, ...
        """
        METAINFO = dict(classes=DIGITS_CLASSES)

        def __init__(self, split='train', seed=0, val_ratio=0.2, image_size=32, pipeline=(), **kwargs):
            if split not in SPLITS:
                raise ValueError(f'DigitsDataset: split must be one of {SPLITS}, got {split!r}.')
            self.split, self.seed, self.val_ratio, self.image_size = split, seed, val_ratio, image_size
            kwargs.setdefault('metainfo', dict(classes=DIGITS_CLASSES))
            super().__init__(ann_file='', pipeline=pipeline, **kwargs)

        def load_data_list(self):
            images, labels = digits_arrays(self.split, self.seed, self.val_ratio, self.image_size)
            shape = images.shape[1:3]
            return [dict(img=image, gt_label=int(label), img_shape=shape, ori_shape=shape)
                    for image, label in zip(images, labels)]

    return DigitsDataset


@DATASETS.register_module(name='DigitsDataset')
def build_digits_dataset(**kwargs):
    return _dataset_class()(**kwargs)
