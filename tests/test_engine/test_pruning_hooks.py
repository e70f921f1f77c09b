import math

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn

from mmssm.engine.hooks.pruning import (
    ChannelMasks,
    CosinePruningHook,
    EarlyBirdHook,
    GradientSaliencyHook,
    IMPRewindHook,
    PruningMasks,
    cosine_sparsity,
    mask_distance,
    rank_units,
    saliency_scores,
    select_groups,
    select_prunable,
)
from mmssm.engine.hooks.pruning.base import CHECKPOINT_KEY
from mmssm.models.backbones.mamba_vision import ConvBlock, MambaVision, Mlp
from mmssm.models.backbones.vim import Vim
from mmssm.pruning import dead_units, masked_units, member_slice


class ToyNet(BaseModel):
    """Linear/Conv weights plus every kind of parameter that must never be pruned by default."""

    def __init__(self, bn=False):
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm1d(4) if bn else nn.Identity()
        self.fc1 = nn.Linear(32, 16)
        self.norm = nn.LayerNorm(16)
        self.fc2 = nn.Linear(16, 3)
        self.A_log = nn.Parameter(torch.zeros(4))
        self.D = nn.Parameter(torch.ones(4))
        self.pos_embed = nn.Parameter(torch.zeros(1, 8))
        self.cls_token = nn.Parameter(torch.zeros(1, 8))

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = self.bn(self.conv(inputs[:, None] + self.pos_embed)).flatten(1)
        x = x * self.D.repeat_interleave(8) + self.A_log.sum() + self.cls_token.sum()
        logits = self.fc2(torch.relu(self.norm(self.fc1(x))))
        if mode == 'loss':
            return dict(loss=nn.functional.cross_entropy(logits, data_samples))
        return logits


class StructNet(BaseModel):
    """ToyNet's task with two structured groups: a MambaVision conv block (BN channels) and an MLP (hidden units)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.block = ConvBlock(4)
        self.mlp = Mlp(32, 16)
        self.head = nn.Linear(32, 3)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = self.block(self.stem(inputs.view(-1, 1, 2, 4))).flatten(1)
        logits = self.head(x + self.mlp(x))
        if mode == 'loss':
            return dict(loss=nn.functional.cross_entropy(logits, data_samples))
        return logits


def dataset(n=32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return [dict(inputs=x[i], data_samples=y[i]) for i in range(n)]


class Checker(Hook):
    """Runs after the pruning and EMA hooks: asserts pruned weights (and the EMA copy) are exactly zero and that
    masks never regrow."""
    priority = 'LOWEST'

    def __init__(self, hook):
        self.hook, self.prev, self.checks = hook, None, 0

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        masks = self.hook.masks.masks
        params = dict(runner.model.named_parameters())
        ema = self.hook.ema_params(runner)
        for n, m in masks.items():
            assert (params[n][~m] == 0).all(), n
            if ema:
                assert (ema[n][~m] == 0).all(), n
            if self.prev is not None:
                assert not (m & ~self.prev[n]).any(), f'{n} regrew'
        self.prev = {n: m.clone() for n, m in masks.items()}
        self.checks += 1


def make_runner(tmp_path, hook, max_epochs=2, max_iters=None, ema=False, optim_type='OptimWrapper', bn=False,
                resume=False, extra_hooks=(), model=None, load_from=None):
    train_cfg = dict(by_epoch=False, max_iters=max_iters) if max_iters else dict(by_epoch=True,
                                                                                 max_epochs=max_epochs)
    hooks = [hook, dict(type='mmssm.WeightsOnlyCheckpointHook'), *extra_hooks]
    if ema:
        hooks.append(dict(type='EMAHook', momentum=0.1))
    sampler = 'InfiniteSampler' if max_iters else 'DefaultSampler'  # MMEngine sleeps 2 s per finite-loader restart
    torch.manual_seed(0)  # the model is built before the runner seeds
    return Runner(
        model=model() if model else ToyNet(bn=bn), work_dir=str(tmp_path), load_from=load_from,
        train_dataloader=dict(dataset=dataset(), sampler=dict(type=sampler, shuffle=False),
                              batch_size=8, collate_fn=dict(type='default_collate'), num_workers=0),
        optim_wrapper=dict(type=optim_type, optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.5),
                           clip_grad=dict(max_norm=0.1)),
        param_scheduler=dict(type='LinearLR', start_factor=0.1, by_epoch=False, end=20),
        train_cfg=train_cfg, custom_hooks=hooks, resume=resume,
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=max_iters is None),
                           logger=dict(type='LoggerHook', interval=100)),
        experiment_name=f'prune_{id(hook)}', randomness=dict(seed=0), log_level='WARNING')


def test_cosine_schedule_formula():
    s0, s1, t0, t1 = 0.1, 0.9, 2, 10
    for t, expected in [(0, 0.1), (2, 0.1), (6, 0.5), (10, 0.9), (12, 0.9),
                        (4, 0.1 + 0.8 * (1 - math.sqrt(0.5)) / 2), (8, 0.1 + 0.8 * (1 + math.sqrt(0.5)) / 2)]:
        assert cosine_sparsity(t, s0, s1, t0, t1) == pytest.approx(expected, abs=1e-12)
    hook = CosinePruningHook(target_sparsity=0.9, start_sparsity=0.1, begin=2, end=10)
    assert hook.sparsity_at(6) == pytest.approx(0.5)


def test_prunable_set_excludes_norms_ssm_params_biases_tokens():
    names = set(select_prunable(ToyNet(bn=True)))
    assert names == {'conv.weight', 'fc1.weight', 'fc2.weight'}
    assert 'A_log' in select_prunable(ToyNet(), include=['A_log'])
    assert 'fc2.weight' not in select_prunable(ToyNet(), exclude=['fc2.*'])


@pytest.mark.parametrize('make, match', [
    (lambda: CosinePruningHook(target_sparsity=1.5, begin=0, end=2), 'target_sparsity=1.5'),
    (lambda: CosinePruningHook(target_sparsity=0.5, begin=3, end=2), 'begin=3'),
    (lambda: CosinePruningHook(target_sparsity=0.5, begin=0, end=2, scope='net'), "scope='net'"),
    (lambda: IMPRewindHook(target_sparsity=0.5, round_iters=0), 'round_iters=0'),
    (lambda: EarlyBirdHook(prune_ratio=0.5, score='gamma'), "score='gamma'"),
    (lambda: GradientSaliencyHook(target_sparsity=0.5, criterion='fisher'), "criterion='fisher'"),
    (lambda: CosinePruningHook(target_sparsity=0.5, begin=0, end=2, granularity='row'), "granularity='row'"),
    (lambda: IMPRewindHook(target_sparsity=0.5, round_iters=2, channel_norm='l3'), "channel_norm='l3'"),
    (lambda: select_groups(ToyNet()), "granularity='channel': no structured group"),
    (lambda: select_groups(StructNet(), exclude=['*']), "exclude=\\['\\*'\\]"),
])
def test_bad_values_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_prune_to_layer_and_global():
    params = dict(a=torch.arange(10.).view(2, 5), b=torch.arange(10., 20.))
    masks = PruningMasks(params)
    masks.prune_to(0.3, {n: p.abs() for n, p in params.items()}, 'layer')
    assert masks.masks['a'].flatten().tolist() == [False] * 3 + [True] * 7
    assert masks.sparsity()['total'] == pytest.approx(0.3)
    masks.prune_to(0.5, {n: -p for n, p in params.items()}, 'global')  # reversed scores: still no regrowth
    assert not masks.masks['a'].flatten()[:3].any() and masks.sparsity()['total'] == pytest.approx(0.5)


def test_cosine_by_iter_masks_hold_adamw_clip_ema(tmp_path):
    hook = CosinePruningHook(target_sparsity=0.8, begin=1, end=9, interval=2, by_epoch=False)
    checker = Checker(hook)
    runner = make_runner(tmp_path, hook, max_iters=12, ema=True, extra_hooks=[checker])
    runner.train()
    stats = hook.masks.sparsity()
    for n in hook.masks.masks:
        numel = hook.masks.masks[n].numel()
        assert stats[n] == pytest.approx(round(0.8 * numel) / numel)
    assert checker.checks == 12
    assert runner.message_hub.get_scalar('train/sparsity').current() == pytest.approx(stats['total'])


@pytest.mark.skipif(not torch.cuda.is_available(), reason='MMEngine AmpOptimWrapper asserts a CUDA device')
def test_cosine_masks_hold_under_amp(tmp_path):
    hook = CosinePruningHook(target_sparsity=0.6, begin=0, end=4, by_epoch=False)
    checker = Checker(hook)
    make_runner(tmp_path, hook, max_iters=6, ema=True, optim_type='AmpOptimWrapper', extra_hooks=[checker]).train()
    assert checker.checks == 6 and hook.masks.sparsity()['total'] == pytest.approx(0.6, abs=0.01)


def test_resume_restores_masks_and_schedule_weights_only(tmp_path):
    hook = CosinePruningHook(target_sparsity=0.75, begin=0, end=3)
    make_runner(tmp_path, hook, max_epochs=2).train()
    ckpt = torch.load(tmp_path / 'epoch_2.pth', weights_only=True)
    saved = ckpt[CHECKPOINT_KEY]
    assert saved['schedule']['current'] == pytest.approx(cosine_sparsity(1, 0, 0.75, 0, 3))
    for n, m in hook.masks.masks.items():
        assert torch.equal(saved['masks'][n], m)

    resumed = CosinePruningHook(target_sparsity=0.75, begin=0, end=3)

    class AtStart(Hook):
        priority = 'LOWEST'
        seen = None

        def before_train_epoch(self, runner):
            if self.seen is None:
                self.seen = (runner.epoch, resumed.current, {n: m.clone() for n, m in resumed.masks.masks.items()})

    probe = AtStart()
    make_runner(tmp_path, resumed, max_epochs=4, resume=True, extra_hooks=[probe]).train()
    epoch, current, masks = probe.seen
    assert epoch == 2 and current == pytest.approx(cosine_sparsity(2, 0, 0.75, 0, 3))
    for n, m in masks.items():  # epoch 2 pruned further from the restored masks: a subset of them
        assert not (m & ~saved['masks'][n]).any()
    assert resumed.masks.sparsity()['total'] == pytest.approx(0.75, abs=0.01)


def test_imp_rewinds_survivors_optimizer_and_lr(tmp_path):
    hook = IMPRewindHook(target_sparsity=0.75, round_iters=3, prune_fraction=0.5, rewind_iter=2)

    class AfterRewind(Hook):
        priority = 'LOWEST'
        checked = 0

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            if runner.iter not in (5, 8):
                return
            snap = hook.snapshot
            names = [n for n, _ in runner.model.named_parameters()]
            state = runner.optim_wrapper.state_dict()
            for idx, n in enumerate(names):
                p = dict(runner.model.named_parameters())[n]
                keep = hook.masks.masks.get(n, torch.ones_like(p, dtype=torch.bool))
                assert torch.equal(p[keep], snap['model'][n][keep]), n
                assert (p[~keep] == 0).all()
                for key in ('exp_avg', 'exp_avg_sq'):
                    assert torch.equal(state['state'][idx][key][keep], snap['optim']['state'][idx][key][keep])
                    assert (state['state'][idx][key][~keep] == 0).all()
                assert torch.equal(state['state'][idx]['step'], snap['optim']['state'][idx]['step'])
            assert runner.param_schedulers[0].last_step == snap['schedulers'][0]['last_step']
            assert runner.optim_wrapper.get_lr()['lr'][0] == snap['optim']['param_groups'][0]['lr']
            ema = hook.ema_model(runner).state_dict()  # the EMA copy is rewound too, masked
            assert int(ema['steps']) == int(snap['ema']['steps']) == 2
            for n, keep in hook.masks.masks.items():
                assert torch.equal(ema[f'module.{n}'][keep], snap['ema'][f'module.{n}'][keep]), n
                assert (ema[f'module.{n}'][~keep] == 0).all()
            assert torch.equal(ema['module.norm.weight'], snap['ema']['module.norm.weight'])
            self.checked += 1

    probe = AfterRewind()
    make_runner(tmp_path, hook, max_iters=10, ema=True, extra_hooks=[probe, Checker(hook)]).train()
    assert probe.checked == 2 and hook.rounds == 2
    assert hook.masks.sparsity()['total'] == pytest.approx(0.75, abs=0.01)


def test_early_bird_distance_and_ticket():
    hook = EarlyBirdHook(prune_ratio=0.5, epsilon=0.1, window=5)
    base = torch.tensor([True] * 10 + [False] * 10)
    assert mask_distance(base, ~base) == 1.0 and mask_distance(base, base) == 0.0
    flip = base.clone()
    flip[0] = False
    flip[10] = True
    assert mask_distance(base, flip) == pytest.approx(0.1)
    far = base.clone()
    far[:3] = False
    far[10:13] = True  # distance 0.3
    hook.history = [far, base, base, flip]
    assert not hook.ticket_ready()  # only 4 masks
    hook.history = [far, base, base, flip, base]
    assert not hook.ticket_ready()  # newest vs `far` is 0.3 > 0.1
    hook.history = [base, base, flip, base, flip]
    assert hook.ticket_ready()  # all distances <= 0.1 (0.1 counts)


@pytest.mark.parametrize('bn', [False, True])
def test_early_bird_prunes_after_ticket(tmp_path, bn):
    hook = EarlyBirdHook(prune_ratio=0.5, epsilon=1.0, window=2)
    checker = Checker(hook)
    make_runner(tmp_path, hook, max_epochs=3, bn=bn, extra_hooks=[checker]).train()
    assert hook.drawn_epoch == 1  # second epoch: first time two masks exist
    assert hook.score == ('bn' if bn else 'channel_l1')
    dead = torch.cat([(~m).flatten() if m.dim() == 1 else (~m).flatten(1).all(1)
                      for n, m in hook.masks.masks.items() if (m.dim() == 1) == bn and n.endswith('weight')])
    assert dead.float().mean().item() == pytest.approx(0.5, abs=0.05)


def test_saliency_scores_match_hand_computation():
    model = ToyNet()
    data = dict(inputs=torch.randn(6, 8, dtype=torch.float64), data_samples=torch.tensor([0, 1, 2, 0, 1, 2]))
    model = model.double()
    params = select_prunable(model)
    snip = saliency_scores(model, [data, data], params, 'snip')
    grad = saliency_scores(model, [data, data], params, 'grad')
    # hand computation of fc2's gradient: dL/dW2 = (softmax - onehot)^T h / n, doubled for the two batches
    with torch.no_grad():
        x = model.conv(data['inputs'][:, None] + model.pos_embed).flatten(1)
        x = x * model.D.repeat_interleave(8) + model.A_log.sum() + model.cls_token.sum()
        h = torch.relu(model.norm(model.fc1(x)))
        p = torch.softmax(model.fc2(h), -1)
        g = 2 * (p - nn.functional.one_hot(data['data_samples'], 3)).T @ h / 6
    torch.testing.assert_close(grad['fc2.weight'], g.abs())
    torch.testing.assert_close(snip['fc2.weight'], (g * model.fc2.weight).abs())


@pytest.mark.parametrize('criterion', ['snip', 'grad'])
def test_saliency_hook_deterministic_and_kept(tmp_path, criterion):
    results = []
    for run in range(2):
        hook = GradientSaliencyHook(target_sparsity=0.7, criterion=criterion, num_batches=2, at_iter=1)
        checker = Checker(hook)
        make_runner(tmp_path / str(run), hook, max_iters=5, extra_hooks=[checker]).train()
        assert hook.masks.sparsity()['total'] == pytest.approx(0.7, abs=0.01)
        results.append(hook.masks.state_dict())
    for n in results[0]:
        assert torch.equal(results[0][n], results[1][n])


# ---- channel (structured) granularity


def test_rank_units_layer_global_no_regrowth():
    scores = dict(a=torch.tensor([4., 1., 3., 2.]), b=torch.tensor([0.5, 9., 0.1, 8.]))
    alive = {n: torch.ones(4, dtype=torch.bool) for n in scores}
    keep = rank_units(scores, alive, 0.5, 'layer')
    assert keep['a'].tolist() == [True, False, True, False] and keep['b'].tolist() == [False, True, False, True]
    keep = rank_units(scores, alive, 0.5, 'global')  # the four lowest overall: b0, b2, a1, a3
    assert keep['a'].tolist() == [True, False, True, False] and keep['b'].tolist() == [False, True, False, True]
    keep = rank_units(dict(a=torch.tensor([1., 2.]), b=torch.tensor([5., 6.])),
                      {n: torch.ones(2, dtype=torch.bool) for n in 'ab'}, 0.75, 'global')
    assert keep['a'].tolist() == [False, True]  # a keeps one unit although both rank lowest
    assert keep['b'].tolist() == [False, True]
    dead_a = dict(a=torch.tensor([False, True, True, True]), b=torch.ones(4, dtype=torch.bool))
    keep = rank_units(dict(a=torch.tensor([9., 1., 3., 2.]), b=scores['b']), dead_a, 0.25, 'layer')
    assert keep['a'].tolist() == [False, True, True, True]  # unit 0 stays pruned despite the top score


@pytest.mark.parametrize('build', [lambda: Vim(arch='test', img_size=16, patch_size=8),
                                   lambda: MambaVision(arch='test')], ids=['vim', 'mambavision'])
def test_channel_masks_cover_units_and_agree_with_export(build):
    torch.manual_seed(0)
    model = build()
    groups = select_groups(model)
    assert {g.kind for g in groups} >= {'ssm_channel'}
    masks = ChannelMasks(model, groups)
    masks.prune_to(0.5, {n: p.detach().abs() for n, p in masks.params.items()}, 'layer')
    pruned = {g.name: (~masks.units[g.name]).nonzero().flatten().tolist() for g in groups}
    for g in groups:
        assert len(pruned[g.name]) == min(round(0.5 * g.size), g.size - 1), g.name
        for member in g.members:
            if member.param not in masks.masks:
                continue  # buffers
            for unit in range(g.size):
                held = masks.masks[member.param][member_slice(member, unit)]
                kept = unit not in pruned[g.name]
                assert bool(held.all()) == kept and bool(held.any()) == kept, (member, unit)
    assert masked_units(groups, masks.masks) == pruned  # what prune_export reads back
    masks.apply()
    assert {g.name: dead_units(model, g) for g in groups} == pruned
    stats = masks.sparsity()
    assert stats['total'] == pytest.approx(sum(map(len, pruned.values())) / sum(g.size for g in groups))
    assert 0 < stats['weights'] < 1


def test_channel_cosine_masks_hold_and_prune_units(tmp_path):
    hook = CosinePruningHook(target_sparsity=0.5, begin=0, end=4, by_epoch=False, granularity='channel')
    checker = Checker(hook)
    make_runner(tmp_path, hook, max_iters=6, ema=True, extra_hooks=[checker], model=StructNet).train()
    assert checker.checks == 6
    assert (~hook.masks.units['block.channels']).sum() == 2 and (~hook.masks.units['mlp.hidden']).sum() == 8
    # a pruned unit zeroes every member parameter slice: BN scale and shift, conv1 row, conv2 column
    unit = int((~hook.masks.units['block.channels']).nonzero()[0])
    for name in ('block.norm1.weight', 'block.norm1.bias', 'block.conv1.bias'):
        assert not hook.masks.masks[name][unit]
    assert not hook.masks.masks['block.conv2.weight'][:, unit].any()
    assert 'stem.weight' not in hook.masks.masks and 'head.weight' not in hook.masks.masks


def test_early_bird_channel_ticket_prunes_units(tmp_path):
    hook = EarlyBirdHook(prune_ratio=0.5, epsilon=1.0, window=2, granularity='channel')
    runner = make_runner(tmp_path, hook, max_epochs=3, extra_hooks=[Checker(hook)], model=StructNet)
    runner.train()
    assert hook.bn_groups == {'block.channels': 'block.norm1.weight'}  # the MLP has no BN: mean |w| scores
    assert hook.drawn_epoch == 1
    ticket = hook.history[-1]
    assert torch.equal(torch.cat([hook.masks.units['block.channels'], hook.masks.units['mlp.hidden']]), ticket)
    assert (~hook.masks.units['block.channels']).sum() == 2 and (~hook.masks.units['mlp.hidden']).sum() == 8
    gamma = runner.model.block.norm1.weight.detach()
    assert (gamma[~hook.masks.units['block.channels']] == 0).all()


def test_early_bird_channel_l1_penalty_on_scored_bn_only():
    from types import SimpleNamespace
    model = StructNet()
    hook = EarlyBirdHook(prune_ratio=0.5, granularity='channel', l1_lambda=0.01)
    hook.before_train(SimpleNamespace(model=model))
    (0 * sum(p.sum() for p in model.parameters())).backward()
    assert torch.equal(model.block.norm1.weight.grad, torch.full((4,), 0.01))  # gamma = 1: sign 1
    assert not model.block.norm2.weight.grad.any() and not model.mlp.fc1.weight.grad.any()
    hook.after_train(None)


def test_early_bird_channel_on_mambavision_uses_bn_for_conv_stages():
    model = MambaVision(arch='test')
    hook = EarlyBirdHook(prune_ratio=0.3, granularity='channel')
    groups = hook.select_groups(model)
    conv_groups = {g.name for g in groups if g.kind == 'conv_channel'}
    assert conv_groups == {'levels.0.blocks.0.channels', 'levels.1.blocks.0.channels'}
    assert hook.bn_groups == {n: n.replace('.channels', '.norm1.weight') for n in conv_groups}
    assert len(groups) > len(conv_groups)  # hybrid stages: mean |w| scores
    bn_only = EarlyBirdHook(prune_ratio=0.3, granularity='channel', score='bn')
    assert {g.name for g in bn_only.select_groups(model)} == conv_groups
    with pytest.raises(ValueError, match="score='bn' with granularity='channel' needs"):
        EarlyBirdHook(prune_ratio=0.3, granularity='channel', score='bn').select_groups(Vim(arch='test'))


# ---- resume: masks and schedule state from a weights_only checkpoint, the run continues identically

RESUME_CASES = {
    # name: (hook factory, make_runner kwargs of the full run, checkpoint to resume from)
    'cosine_channel': (lambda: CosinePruningHook(target_sparsity=0.5, begin=1, end=7, interval=2, by_epoch=False,
                                                 granularity='channel'),
                       dict(max_iters=9, model=StructNet, ema=True), 'iter_4.pth'),
    'imp': (lambda: IMPRewindHook(target_sparsity=0.75, round_iters=3, prune_fraction=0.5, rewind_iter=2),
            dict(max_iters=10, ema=True), 'iter_6.pth'),
    'early_bird_bn': (lambda: EarlyBirdHook(prune_ratio=0.5, epsilon=1.0, window=3),
                      dict(max_epochs=4, bn=True), 'epoch_2.pth'),
    'early_bird_channel': (lambda: EarlyBirdHook(prune_ratio=0.5, epsilon=1.0, window=3, granularity='channel'),
                           dict(max_epochs=4, model=StructNet), 'epoch_2.pth'),
    'saliency': (lambda: GradientSaliencyHook(target_sparsity=0.7, num_batches=2, at_iter=3),
                 dict(max_iters=8), 'iter_5.pth'),
}


@pytest.mark.parametrize('case', list(RESUME_CASES))
def test_resume_continues_identically(tmp_path, case, monkeypatch):
    factory, kwargs, checkpoint = RESUME_CASES[case]
    full_hook = factory()
    full = make_runner(tmp_path / 'full', full_hook, **kwargs)
    full.train()
    saved = torch.load(tmp_path / 'full' / checkpoint, weights_only=True)[CHECKPOINT_KEY]
    assert saved['granularity'] == full_hook.granularity
    if case.startswith('imp'):  # mid-schedule: one round done, the step-k state (incl. EMA) in the checkpoint
        assert saved['schedule']['rounds'] == 1 and saved['schedule']['snapshot']['model']
        assert (saved['schedule']['snapshot']['ema'] is not None) == kwargs.get('ema', False)
    if case.startswith('early_bird'):  # two masks seen, no ticket yet
        assert len(saved['schedule']['history']) == 2 and saved['schedule']['drawn_epoch'] == -1
    if case == 'saliency':
        assert saved['schedule']['done'] is True
        from mmssm.engine.hooks.pruning import saliency
        monkeypatch.setattr(saliency, 'saliency_scores', lambda *a, **k: pytest.fail('scored again on resume'))

    hook = factory()
    resumed = make_runner(tmp_path / 'resumed', hook, resume=True, load_from=str(tmp_path / 'full' / checkpoint),
                          **kwargs)
    resumed.train()
    assert resumed.iter == full.iter
    for (n, p), (m, q) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        assert n == m and torch.equal(p, q), n
    for n, mask in full_hook.masks.masks.items():
        assert torch.equal(mask, hook.masks.masks[n]), n
    assert hook.schedule_state().keys() == full_hook.schedule_state().keys()
    for key, value in full_hook.schedule_state().items():
        if key not in ('snapshot', 'history'):
            assert hook.schedule_state()[key] == value, key
    if full_hook.ema_params(full):
        for n, p in full_hook.ema_params(full).items():
            assert torch.equal(p, hook.ema_params(resumed)[n]), n


def test_resume_with_other_granularity_raises():
    from types import SimpleNamespace
    hook = CosinePruningHook(target_sparsity=0.5, begin=0, end=2)
    hook.after_load_checkpoint(None, {CHECKPOINT_KEY: dict(granularity='channel', masks={}, units={}, schedule={})})
    with pytest.raises(ValueError, match="pruned with granularity='channel', this hook has granularity='weight'"):
        hook.before_train(SimpleNamespace(model=ToyNet()))
