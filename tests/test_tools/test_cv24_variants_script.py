"""benchmarks/cv24_variants.py: its training loop takes real steps on digits for a couple of variants, and its
table reports mean ± sample std over seeds."""
import importlib.util
import math
import os.path as osp

import pytest
import torch

import mmssm  # noqa: F401  (first: it guards the mmpretrain import that mmdet and mmseg make)

pytest.importorskip('sklearn', reason='scikit-learn (requirements/tests.txt)')
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
spec = importlib.util.spec_from_file_location('cv24_variants', osp.join(ROOT, 'benchmarks', 'cv24_variants.py'))
cv24 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cv24)


@pytest.fixture(scope='module')
def small_data():
    data = cv24.load_data(image_size=32)
    return {split: (x[:48], y[:48]) for split, (x, y) in data.items()}


@pytest.mark.parametrize('variant', ['baseline', 'attention_pool_both'])
def test_one_training_step_changes_the_model(small_data, variant):
    torch.manual_seed(0)
    untrained = cv24.build_variant(variant).state_dict()
    logs = []
    model, accuracy, _ = cv24.train_one(variant, small_data, seed=0, epochs=1, batch_size=16, max_steps=1,
                                        log=logs.append)
    assert 0. <= accuracy <= 1. and len(logs) == 1 and variant in logs[0]
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, untrained[k])]
    assert any('head' in k for k in changed) and any('backbone.patch_embed' in k for k in changed)
    if variant == 'attention_pool_both':
        assert any('downsample' in k and 'pool' in k for k in changed), changed
        assert type(model.head).__name__ == 'AttentionPoolingHead'


def test_random_shift_moves_content_within_bounds():
    x = torch.zeros(4, 3, 16, 16)
    x[:, :, 6:10, 6:10] = 1.
    shifted = cv24.random_shift(x, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == x.shape
    assert torch.equal(shifted.sum((1, 2, 3)), x.sum((1, 2, 3)))  # a 2-pixel shift keeps a central square whole


def test_table_reports_mean_and_sample_std():
    row = dict(variant='v', val_acc=[0.9, 1.0], params=12_345, flops=6_789_000, throughput=321.4)
    line = cv24.table([row]).splitlines()[-1]
    assert line == f'| v | 95.00 ± {math.sqrt(50):.2f} | 2 | 12.3 | 6.79 | 321 |'


def test_unknown_variant_is_named():
    with pytest.raises(ValueError, match="unknown variant 'nope'"):
        cv24.build_variant('nope')


def test_depths_override_gives_shifted_windows_a_shifted_block():
    # with one attention block per hybrid stage nothing shifts; --depths 1 1 4 2 gives stage 3 two of them
    default = cv24.build_variant('shifted_window').backbone.levels[2].blocks
    deeper = cv24.build_variant('shifted_window', depths=(1, 1, 4, 2)).backbone.levels[2].blocks
    assert len(default) == 2 and len(deeper) == 4
    assert not any(getattr(b.mixer, 'shift', False) for b in default)
    assert [getattr(b.mixer, 'shift', False) for b in deeper] == [False, False, False, True]
