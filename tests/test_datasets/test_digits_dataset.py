"""mmssm.DigitsDataset: scikit-learn's bundled digits, split deterministically and stratified, through MMPretrain's
dataset builder and standard pipeline."""
import builtins

import numpy as np
import pytest

import mmssm  # noqa: F401  (first: it guards the mmpretrain import that mmdet and mmseg make)

sklearn_datasets = pytest.importorskip('sklearn.datasets', reason='scikit-learn (requirements/tests.txt)')

from mmssm.datasets.digits import DIGITS_CLASSES, digits_arrays, digits_split  # noqa: E402


@pytest.fixture(scope='module')
def reference():
    digits = sklearn_datasets.load_digits()
    return digits.images, digits.target


def build(**kwargs):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS
    init_default_scope('mmpretrain')
    return DATASETS.build(dict(type='mmssm.DigitsDataset', **kwargs))


def test_split_sizes_partition_and_stratification(reference):
    _, labels = reference
    train, val = digits_split('train', seed=3), digits_split('val', seed=3)
    assert len(train) + len(val) == len(labels) == 1797
    assert not set(train) & set(val)
    for label in range(10):
        n = int((labels == label).sum())
        assert int((labels[val] == label).sum()) == int(round(0.2 * n))
        assert int((labels[train] == label).sum()) == n - int(round(0.2 * n))
    np.testing.assert_array_equal(digits_split('all'), np.arange(1797))


def test_split_is_deterministic_and_seeded():
    np.testing.assert_array_equal(digits_split('val', seed=5), digits_split('val', seed=5))
    assert not np.array_equal(digits_split('val', seed=5), digits_split('val', seed=6))


def test_arrays_are_upscaled_digits(reference):
    images, labels = reference
    x, y = digits_arrays('val', seed=0, image_size=8)
    index = digits_split('val', seed=0)
    assert x.dtype == np.uint8 and x.shape == (len(index), 8, 8, 3)
    np.testing.assert_array_equal(y, labels[index])
    np.testing.assert_array_equal(x[..., 0], np.round(images[index] * 255 / 16).astype(np.uint8))
    assert (x[..., 0] == x[..., 2]).all()
    big, _ = digits_arrays('val', seed=0, image_size=32)
    assert big.shape[1:] == (32, 32, 3)
    # bilinear upscaling by 4 keeps the mean grey level of each image within rounding/border effects
    np.testing.assert_allclose(big[..., 0].mean((1, 2)), x[..., 0].astype(float).mean((1, 2)), atol=8)


def test_builder_and_pipeline(reference):
    _, labels = reference
    pipeline = [dict(type='RandomResizedCrop', scale=24, crop_ratio_range=(0.8, 1.0)), dict(type='PackInputs')]
    dataset = build(split='val', seed=1, image_size=32, pipeline=pipeline)
    index = digits_split('val', seed=1)
    assert len(dataset) == len(index)
    assert dataset.metainfo['classes'] == DIGITS_CLASSES
    sample = dataset[7]
    assert tuple(sample['inputs'].shape) == (3, 24, 24)
    assert int(sample['data_samples'].gt_label) == labels[index[7]]
    assert dataset.get_gt_labels().tolist() == labels[index].tolist()


def test_bad_arguments():
    with pytest.raises(ValueError, match="split must be one of \\('train', 'val', 'all'\\), got 'test'"):
        build(split='test')
    with pytest.raises(ValueError, match='val_ratio must be in \\(0, 1\\)'):
        digits_split('train', val_ratio=1.5)
    with pytest.raises(ValueError, match='image_size must be an int >= 8'):
        digits_arrays('train', image_size=4)


def test_missing_sklearn_says_how_to_install(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith('sklearn'):
            raise ImportError('no sklearn')
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', fake_import)
    with pytest.raises(ImportError, match='pip install scikit-learn'):
        digits_split('train')
