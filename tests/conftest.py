import pytest
import torch


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA: skip them, with the reason, where there is none."""
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason='needs a CUDA device (run on the GPU machine: pytest -m gpu)')
    for item in items:
        if 'gpu' in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    """The dataset of tests/data/configs/tiny_cls_train.py: an ImageNet-style folder, 3 classes x 4 images of
    32x32, each class a bright square in its own colour channel."""
    import numpy as np
    from PIL import Image
    root = tmp_path_factory.mktemp('tiny_cls')
    rng = np.random.default_rng(0)
    for label, name in enumerate(['red', 'green', 'blue']):
        folder = root / 'train' / name
        folder.mkdir(parents=True)
        for i in range(4):
            image = rng.integers(0, 80, (32, 32, 3), dtype=np.uint8)
            image[8:24, 8:24, label] = 230
            Image.fromarray(image).save(folder / f'{i}.png')
    return str(root)
