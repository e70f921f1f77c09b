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
