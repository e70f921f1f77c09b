"""Channel-granularity pruning hook -> training checkpoint -> export (function and CLI) -> the same config with
``pruned_widths``: fewer parameters, the masked model's output (float64)."""
import copy
import importlib.util
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmssm.pruning import export_pruned, masked_units, structured_groups

pytest.importorskip('mmpretrain')

HEAD = """
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmssm.models', 'mmssm.engine'], allow_failed_imports=False)
data_preprocessor = dict(type='ClsDataPreprocessor', num_classes=4, mean=[127.5] * 3, std=[127.5] * 3)
# four iterations: the cosine hook at channel granularity reaches its target at iteration 2; EMA on
custom_hooks = [
    dict(type='EMAHook', momentum=0.5, priority='ABOVE_NORMAL'),
    dict(type='mmssm.CosinePruningHook', granularity='channel', target_sparsity=0.5, begin=0, end=2, by_epoch=False,
         log_per_layer=False),
]
"""
CONFIGS = {
    'vim': HEAD + """
model = dict(type='ImageClassifier',
             backbone=dict(type='mmssm.Vim', arch='test', img_size=32, patch_size=8, out_type='cls_token'),
             head=dict(type='LinearClsHead', num_classes=4, in_channels=32))
""",
    'mambavision': HEAD + """
model = dict(type='ImageClassifier',
             backbone=dict(type='mmssm.MambaVision', out_indices=3, mixer='s6',
                           arch=dict(embed_dims=8, stem_channels=8, depths=(1, 1, 2, 2), num_heads=(2, 2, 2, 4),
                                     window_size=(2, 2, 1, 1))),
             neck=dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead', num_classes=4, in_channels=64))
""",
}
TARGET = 0.5


class RandomImages(torch.utils.data.Dataset):
    def __init__(self, n=16):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
        self.labels = torch.randint(0, 4, (n,), generator=g)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from mmpretrain.structures import DataSample
        return dict(inputs=self.images[i], data_samples=DataSample().set_gt_label(int(self.labels[i])))


def _tool():
    path = Path(__file__).resolve().parents[2] / 'tools/analysis/prune_export.py'
    spec = importlib.util.spec_from_file_location('prune_export_tool', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def _train(cfg, work_dir, max_iters=4):
    torch.manual_seed(0)
    runner = Runner(
        model=copy.deepcopy(cfg.model), work_dir=str(work_dir), data_preprocessor=cfg.data_preprocessor,
        train_dataloader=dict(dataset=RandomImages(), sampler=dict(type='InfiniteSampler', shuffle=False),
                              batch_size=4, collate_fn=dict(type='pseudo_collate'), num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        custom_hooks=copy.deepcopy(cfg.custom_hooks) + [dict(type='mmssm.WeightsOnlyCheckpointHook')],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=max_iters, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=100)),
        default_scope='mmpretrain', randomness=dict(seed=0), log_level='WARNING',
        experiment_name=f'channel_export_{id(work_dir)}')
    runner.train()
    return work_dir / f'iter_{max_iters}.pth'


def _logits(model, x):
    with torch.no_grad():
        return model(x, mode='tensor')


@pytest.mark.parametrize('family', list(CONFIGS))
def test_channel_pruned_checkpoint_exports(tmp_path, family):
    tool = _tool()
    config = tmp_path / f'tiny_{family}.py'
    config.write_text(CONFIGS[family])
    cfg = Config.fromfile(str(config))
    checkpoint = _train(cfg, tmp_path / 'work')

    # the function: masks of the checkpoint -> units -> export
    saved = torch.load(checkpoint, weights_only=True)
    model = tool.build_model(cfg).eval()
    model.load_state_dict(saved['state_dict'], strict=True)
    groups = structured_groups(model)
    units = masked_units(groups, saved['mmssm_pruning']['masks'])
    assert {g.kind for g in groups} >= ({'ssm_channel'} if family == 'vim' else
                                        {'ssm_channel', 'attn_head', 'mlp_hidden', 'conv_channel'})
    for group in groups:  # the hook's target, as units
        assert len(units[group.name]) == min(round(TARGET * group.size), group.size - 1), group.name
        assert torch.equal(saved['mmssm_pruning']['units'][group.name],
                           torch.tensor([u not in units[group.name] for u in range(group.size)]))
    masked = copy.deepcopy(model).double()
    exported, widths = export_pruned(model, units)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = _logits(masked, x)

    rebuilt_cfg = copy.deepcopy(cfg)
    rebuilt_cfg.model.backbone.pruned_widths = widths
    rebuilt = tool.build_model(rebuilt_cfg).eval()
    rebuilt.load_state_dict(exported.state_dict(), strict=True)
    torch.testing.assert_close(_logits(rebuilt.double(), x), ref, rtol=1e-10, atol=1e-10)
    assert sum(p.numel() for p in rebuilt.parameters()) < sum(p.numel() for p in masked.parameters())

    # the CLI on the training checkpoint: same widths, same output, loadable from its written config
    cli_model, cli_widths = tool.main([str(config), str(checkpoint), str(tmp_path / 'out'), '--img-size', '32',
                                       '--cfg-options', 'model.head.topk=1'])  # overrides as given to train.py
    assert cli_widths == widths
    out_cfg = Config.fromfile(str(tmp_path / 'out' / f'tiny_{family}_pruned.py'))
    assert out_cfg.model.backbone.pruned_widths == widths and out_cfg.model.head.topk == 1
    assert [h['type'] for h in out_cfg.custom_hooks] == ['EMAHook']  # fine-tuning it must not prune again
    from_cfg = tool.build_model(out_cfg).eval()
    from_cfg.load_state_dict(torch.load(tmp_path / 'out' / 'pruned.pth', weights_only=True)['state_dict'],
                             strict=True)
    torch.testing.assert_close(_logits(from_cfg.double(), x), ref, rtol=1e-10, atol=1e-10)


def test_cli_refuses_masks_not_applied(tmp_path):
    """Masks saying a unit is pruned while its weights are not zero: exporting would change the output."""
    tool = _tool()
    config = tmp_path / 'tiny_vim.py'
    config.write_text(CONFIGS['vim'])
    cfg = Config.fromfile(str(config))
    saved = torch.load(_train(cfg, tmp_path / 'work', max_iters=2), weights_only=True)
    name = 'backbone.layers.0.mixer.out_proj.weight'
    saved['state_dict'][name] = torch.where(saved['mmssm_pruning']['masks'][name], saved['state_dict'][name], 1.0)
    torch.save(saved, tmp_path / 'broken.pth')
    with pytest.raises(SystemExit, match='masked in the checkpoint but their weights are not zero'):
        tool.main([str(config), str(tmp_path / 'broken.pth'), str(tmp_path / 'out')])
