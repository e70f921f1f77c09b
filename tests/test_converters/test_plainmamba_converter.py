"""PlainMamba converter: every official L1 key maps and loads strictly; the CLI; non-PlainMamba files."""
import json
import os.path as osp

import pytest
import torch

from mmssm.converters.plainmamba import convert_plainmamba_checkpoint, infer_plainmamba_arch
from mmssm.models.backbones.plain_mamba import PlainMamba

KEYS = osp.join(osp.dirname(__file__), '..', 'data', 'plainmamba_l1_official_keys.json')


def _official_state_dict():
    with open(KEYS) as f:
        shapes = json.load(f)
    return {k: torch.zeros(s, dtype=torch.long if k.endswith('num_batches_tracked') else torch.float32)
            for k, s in shapes.items()}


def test_every_official_key_maps_and_loads_strictly():
    official = _official_state_dict()
    arch = infer_plainmamba_arch(official)
    assert arch == dict(embed_dims=192, depth=24, num_convs_patch_embed=1, layers_with_dwconv=(0, ), d_state=16,
                        expand=2, conv_size=7)
    converted = convert_plainmamba_checkpoint(dict(state_dict=official), backbone_only=True)
    assert len(converted) == len(official) - 2  # the head's two tensors dropped
    with torch.device('meta'):
        model = PlainMamba('l1')
    result = model.load_state_dict(converted, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    full = convert_plainmamba_checkpoint(official)
    assert 'head.fc.weight' in full and 'backbone.norm_f.weight' in full and 'backbone.layers.3.mixer.D' in full


def test_cli_roundtrip(tmp_path):
    from tools.model_converters.plainmamba2mmssm import main
    model = PlainMamba('test')
    official = {('backbone.' + k).replace('.mixer.', '.mamba.').replace('norm_f.', 'norm1.'): v
                for k, v in model.state_dict().items()}
    torch.save(dict(meta=dict(epoch=1), state_dict=official), tmp_path / 'src.pth')
    main([str(tmp_path / 'src.pth'), str(tmp_path / 'dst.pth'), '--backbone-only'])
    converted = torch.load(tmp_path / 'dst.pth', weights_only=True)['state_dict']
    fresh = PlainMamba('test')
    fresh.load_state_dict(converted, strict=True)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(fresh.eval()(x), model.eval()(x))


def test_non_plainmamba_file_is_a_clear_error():
    with pytest.raises(ValueError, match='Not a PlainMamba checkpoint'):
        convert_plainmamba_checkpoint({'patch_embed.proj.weight': torch.zeros(1)})
    with pytest.raises(ValueError, match='Not a PlainMamba checkpoint'):
        convert_plainmamba_checkpoint([1, 2])
