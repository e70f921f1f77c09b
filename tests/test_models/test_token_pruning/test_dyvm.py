"""DyVM on Vim: masked (training) forward == gathered (inference) forward, Gumbel straight-through gradients,
per-direction gates, the loss terms, keep counts, FLOPs at the pruned lengths, configs and the frozen teacher."""
import copy
import importlib.util
import os.path as osp

import pytest
import torch

from mmssm.models.layers import MambaMixer
from mmssm.models.token_pruning import DyVim, DyVMLoss
from mmssm.models.token_pruning.dyvm import default_pruning_layers
from mmssm.models.token_pruning.dyvm_loss import (
    block_ratio_loss,
    logit_distill_loss,
    token_distill_loss,
    token_ratio_loss,
)
from mmssm.ops.selective_scan import selective_scan_bidirectional
from mmssm.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
ARCH = dict(embed_dims=32, depth=4, d_state=4, expand=2)  # 4 blocks: pruning before 1, 2, 3
DEMO_CONFIG = osp.join(ROOT, 'configs', 'cls', 'token_pruning', 'dyvm-vim-tiny-p16_demo.py')
IN1K_CONFIG = osp.join(ROOT, 'configs', 'cls', 'token_pruning', 'dyvm-vim-tiny-p16_in1k.py')


@pytest.fixture(autouse=True)
def eager_scan(monkeypatch):
    """The scan's CPU kernels eager: compiling them costs more than these small models' forward passes."""
    monkeypatch.setenv('MMSSM_SCAN_COMPILE', '0')


def build(dyvm=True, **kwargs):
    torch.manual_seed(0)
    cfg = dict(type='mmssm.DyVim' if dyvm else 'mmssm.Vim', arch=ARCH, img_size=32, patch_size=4,
               drop_path_rate=0.0, **kwargs)
    if dyvm:
        cfg.setdefault('keep_ratio', 0.7)
    model = MODELS.build(cfg)
    model.init_weights()
    return model.eval()


def images(batch=3, seed=0, dtype=torch.float32):
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed)).to(dtype)


def randomize_gates(model, seed=1):
    """Gates that differ per sample and direction (the initial ones are all on)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gate in model.direction_gates:
            gate.weight.copy_(torch.randn(gate.weight.shape, generator=generator).to(gate.weight.dtype))
            gate.bias.zero_()


# ---------------------------------------------------------------- MambaMixer: keep_mask and direction_gate
def mixer_inputs(batch=3, length=9, dims=16, seed=0):
    return torch.randn(batch, length, dims, generator=torch.Generator().manual_seed(seed))


def test_default_mixer_path_is_the_plain_computation():
    torch.manual_seed(0)
    mixer = MambaMixer(16, d_state=4).eval()
    x = mixer_inputs()
    with torch.no_grad():
        out = mixer(x)
        xz = mixer.in_proj(x).transpose(1, 2)
        u, z = xz.chunk(2, dim=1)
        f, b = mixer._direction(u, z, '', False), mixer._direction(u, z, '_b', True)
        y_f, y_b = selective_scan_bidirectional(**{k: (f[k], b[k]) for k in f}, z=z.contiguous())
        expected = mixer.out_proj(((y_f + y_b) * 0.5).transpose(1, 2))
        # an all-True keep_mask and all-one gates change no bit
        ones = mixer(x, keep_mask=torch.ones(3, 9, dtype=torch.bool), direction_gate=torch.ones(3, 2))
    assert torch.equal(out, expected)
    assert torch.equal(out, ones)


def _one_direction_mixer(mixer, suffix):
    """A one-direction mixer with the parameters of ``mixer``'s forward ('') or backward ('_b') direction."""
    single = MambaMixer(16, d_state=4, bidirectional=False).eval()
    state = {k: v for k, v in mixer.state_dict().items() if not k.endswith('_b') and '_b.' not in k
             and k != 'A_b_log'}
    if suffix == '_b':
        state.update({k.replace('_b', ''): v for k, v in mixer.state_dict().items()
                      if k.endswith('_b') or '_b.' in k or k == 'A_b_log'})
    single.load_state_dict(state)
    return single


def test_gated_off_direction_equals_the_other_direction_alone_and_is_not_computed(monkeypatch):
    torch.manual_seed(0)
    mixer = MambaMixer(16, d_state=4).eval()
    forward_only, backward_only = _one_direction_mixer(mixer, ''), _one_direction_mixer(mixer, '_b')
    x = mixer_inputs()
    calls = []
    original = MambaMixer._direction
    monkeypatch.setattr(MambaMixer, '_direction', lambda self, *a, **k: calls.append(a[2]) or original(self, *a, **k))
    with torch.no_grad():
        # out_proj has no bias: halving the one direction's scan output halves the mixer output (divide_out)
        only_f = mixer(x, direction_gate=torch.tensor([[1.0, 0.0]] * 3))
        assert calls == ['']
        only_b = mixer(x, direction_gate=torch.tensor([[0.0, 1.0]] * 3))
        assert calls == ['', '_b']
        none = mixer(x, direction_gate=torch.zeros(3, 2))
        assert calls == ['', '_b']
        # per sample: sample 1 without its backward scan, the others dense; the backward scan runs on 2 samples
        calls.clear()
        mixed = mixer(x, direction_gate=torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]]))
        assert calls == ['', '_b']
        dense = mixer(x)
        expected_f = 0.5 * forward_only(x)
        expected_b = 0.5 * backward_only(x.flip(1)).flip(1)
    torch.testing.assert_close(only_f, expected_f, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(only_b, expected_b, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(only_f, dense, atol=1e-3)
    assert torch.equal(none, torch.zeros_like(none))
    torch.testing.assert_close(mixed[1], expected_f[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mixed[[0, 2]], dense[[0, 2]], rtol=1e-5, atol=1e-6)


def test_keep_mask_at_the_back_equals_the_short_sequence():
    """Kept tokens first, pruned behind: the kept outputs equal the mixer on the kept tokens alone."""
    torch.manual_seed(0)
    mixer = MambaMixer(16, d_state=4).double().eval()
    x = mixer_inputs(length=11).double()
    mask = torch.zeros(3, 11, dtype=torch.bool)
    mask[:, :7] = True
    with torch.no_grad():
        short = mixer(x[:, :7])
        masked = mixer(x, keep_mask=mask)
        unmasked = mixer(x)
    torch.testing.assert_close(masked[:, :7], short, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(unmasked[:, :7], short, atol=1e-4)  # the pruned tokens do reach the kept ones
    with pytest.raises(ValueError, match='keep_mask must be a bool tensor'):
        mixer(x, keep_mask=mask.float())
    with pytest.raises(ValueError, match=r'direction_gate must be a float tensor of shape \(batch, directions\)'):
        mixer(x, direction_gate=torch.ones(3, 1))


# ---------------------------------------------------------------- DyVim
def test_default_layers_and_keep_counts():
    assert default_pruning_layers(24) == (6, 12, 18)
    assert default_pruning_layers(12) == (3, 6, 9)
    assert default_pruning_layers(4) == (1, 2, 3)
    assert default_pruning_layers(2) == (1,)
    assert MODELS.build(dict(type='mmssm.DyVim', arch='tiny')).keep_ratios == pytest.approx((0.9, 0.81, 0.729))
    assert MODELS.build(dict(type='mmssm.DyVim', arch='test')).keep_ratios == (0.7,)
    model = build()
    assert model.pruning_layers == (1, 2, 3)
    lengths = []
    for layer in model.layers:
        layer.mixer.register_forward_hook(lambda module, args, output: lengths.append(args[0].shape[1]))
    with torch.no_grad():
        model(images(2))
    n = 64  # an 8x8 grid
    kept = [int(0.7 ** s * n) for s in (1, 2, 3)]
    assert kept == [44, 31, 21]
    assert lengths == [n + 1] + [k + 1 for k in kept]
    assert [model.num_kept(s, 196) for s in range(3)] == [int(0.7 ** s * 196) for s in (1, 2, 3)]


def test_nothing_pruned_and_no_gates_equals_vim_exactly():
    dense = build(dyvm=False, out_type='raw')
    model = build(keep_ratio=1.0, block_selection=False, out_type='raw')
    missing = model.load_state_dict(dense.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith('token_predictors.') for k in missing)
    x = images()
    with torch.no_grad():
        assert torch.equal(model(x)[0], dense(x)[0])


@pytest.mark.parametrize('cls_token,discretization', [('middle', 'zoh'), ('head', 'bilinear')])
def test_masked_forward_equals_gathered_forward(cls_token, discretization):
    """The eval-mode top-k decisions and thresholded gates, run as the full-length masked forward (pruned tokens
    behind the kept block), give the gathered forward's outputs: class token and every token restored to full
    length (kept ones: their features; pruned: their stream from when they were pruned)."""
    model = build(out_type='raw', out_indices=(1, 3), cls_token=cls_token, discretization=discretization,
                  residual_in_fp32=False)
    randomize_gates(model)
    model.double()
    x = images(3, dtype=torch.float64)
    with torch.no_grad():
        gathered = model(x)
        masked = model.forward_masked(x, stochastic=False)
    assert masked['gates'] is not None and 0 < masked['gates'].mean() < 1  # some directions really are off
    kept = masked['keep'].sum(1)
    assert kept.tolist() == [int(0.7 ** 3 * 64) + 1] * 3
    assert not torch.equal(masked['positions'][0], masked['positions'][1])  # per-sample selections
    for out_g, out_m in zip(gathered, masked['outputs']):
        assert out_g.shape == (3, 65, 32)
        torch.testing.assert_close(out_m, out_g, rtol=1e-10, atol=1e-10)
    cls_slot = masked['cls_at']
    torch.testing.assert_close(masked['tokens'][torch.arange(3), cls_slot], gathered[1][:, model._pos_cls_index(64)],
                               rtol=1e-10, atol=1e-10)
    # control: without the mixers' keep_mask the pruned tokens behind the kept block leak into it (through the
    # backward scans: every direction on here)
    model.reset_dyvm_parameters()
    with torch.no_grad():
        gathered = model(x)
    for layer in model.layers:
        forward = layer.mixer.forward
        layer.mixer.forward = lambda normed, keep_mask=None, direction_gate=None, f=forward: f(
            normed, direction_gate=direction_gate)
    with torch.no_grad():
        leaked = model.forward_masked(x, stochastic=False)['outputs'][-1]
    assert not torch.allclose(leaked, gathered[-1], atol=1e-6)


def test_cls_token_output_and_featmap():
    model = build(out_type='cls_token')
    randomize_gates(model)
    featmap = build(out_type='featmap', out_indices=(0, 3))
    featmap.load_state_dict(model.state_dict())
    x = images(2)
    with torch.no_grad():
        cls = model(x)[0]
        masked = model.forward_masked(x, stochastic=False)['outputs'][0]
        maps = featmap(x)
    torch.testing.assert_close(cls, masked, rtol=1e-5, atol=1e-6)
    assert cls.shape == (2, 32)
    assert [tuple(m.shape) for m in maps] == [(2, 32, 8, 8)] * 2


def test_pruned_positions_hold_their_stream_from_when_they_were_pruned():
    """out_type 'raw' of the last block: a token pruned before block 1 holds norm_f of its stream entering block 1,
    which is the dense Vim's stream there (block 0 runs unpruned, its gates on)."""
    dense = build(dyvm=False, out_type='raw', out_indices=0)
    model = build(out_type='raw')
    model.load_state_dict(dense.state_dict(), strict=False)
    x = images(2)
    stage1, prune = {}, model._prune_masked

    def record(stage, *args):
        result = prune(stage, *args)
        if stage == 0:
            stage1.update(positions=result[2], keep=result[4] > 0.5)
        return result
    model._prune_masked = record
    with torch.no_grad():
        stream = dense(x)[0]  # residual + mixer output of block 0, original order
        tokens = model(x)[0]
        model.forward_masked(x, stochastic=False)  # the same selections, recorded
    for b in range(2):
        pruned = stage1['positions'][b][~stage1['keep'][b]]
        assert len(pruned) == 64 - 44
        torch.testing.assert_close(tokens[b, pruned], model.norm_f(stream[b, pruned]), rtol=1e-5, atol=1e-6)
    kept = stage1['positions'][0][stage1['keep'][0]]
    assert not torch.allclose(tokens[0, kept], model.norm_f(stream[0, kept]), atol=1e-3)


def test_gumbel_straight_through_reaches_predictors_and_gates():
    model = build().train()
    out = model.forward_masked(images(2))
    out['outputs'][0].square().sum().backward()  # the classification path alone
    for name, param in model.named_parameters():
        if name.startswith(('token_predictors.', 'direction_gates.')) and name.endswith('weight') \
                and param.dim() == 2:
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in model.token_predictors[0].parameters())
    assert model.direction_gates[2].weight.grad.abs().sum() > 0
    # decisions are hard 0/1 with a gradient, and a pruned token stays pruned
    decisions = out['decisions']
    assert all(d.requires_grad and set(d.detach().unique().tolist()) <= {0.0, 1.0} for d in decisions)
    assert (decisions[1].detach().sum(1) <= decisions[0].detach().sum(1)).all()
    assert set(out['gates'].detach().unique().tolist()) <= {0.0, 1.0} and out['gates'].shape == (2, 4, 2)


def test_training_draws_differ_and_eval_is_deterministic():
    model = build().train()
    x = images(2)
    torch.manual_seed(1)
    first = model.forward_masked(x)['positions']
    torch.manual_seed(2)
    second = model.forward_masked(x)['positions']
    assert not torch.equal(first, second)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x)[0], model(x)[0])


def test_errors():
    with pytest.raises(ValueError, match=r'DyVim: keep ratios must be in \(0, 1\], got 1.5'):
        build(keep_ratio=1.5)
    with pytest.raises(ValueError, match=r'DyVim: keep ratios must be in \(0, 1\], got 0'):
        build(keep_ratio=0)
    with pytest.raises(ValueError, match=r'non-increasing fraction .* per pruning layer \(3'):
        build(keep_ratio=(0.5, 0.6, 0.2))
    with pytest.raises(ValueError, match=r'pruning_layers must be ascending distinct block indices in \[1, 3\]'):
        build(pruning_layers=(0, 2))
    with pytest.raises(ValueError, match=r'in \[1, 3\].*got \(2, 4\)'):
        build(pruning_layers=(2, 4))
    with pytest.raises(ValueError, match=r'DyVim does not support rope=True'):
        build(rope=True)
    with pytest.raises(ValueError, match=r"cls_token='none'"):
        build(cls_token='none', out_type='featmap')
    with pytest.raises(ValueError, match=r"conv_type='inverted_residual'"):
        build(conv_type='inverted_residual')
    with pytest.raises(ValueError, match=r"out_type='mean'"):
        build(out_type='mean')
    with pytest.raises(ValueError, match='gate_threshold must be in'):
        build(gate_threshold=1.0)
    model = build(keep_ratio=0.02)  # int(0.02 * 64) = 1, int(0.0004 * 64) = 0
    with pytest.raises(ValueError, match=r'stage 2 keeps int\(0.0004 \* 64\) = 0 patch tokens'):
        with torch.no_grad():
            model(images(1))


# ---------------------------------------------------------------- the loss
def test_loss_terms_respond_to_their_targets():
    decisions = [torch.tensor([[1., 1., 0., 0.], [1., 0., 0., 0.]]), torch.tensor([[1., 0., 0., 0.], [0., 0., 0., 0.]])]
    # kept fractions (0.5, 0.25) at stage 1, (0.25, 0) at stage 2; targets 0.5 and 0.25:
    # ((0 + 0.25^2) / 2 + (0 + 0.25^2) / 2) / 2
    assert token_ratio_loss(decisions, (0.5, 0.25)).item() == pytest.approx(0.03125)
    assert token_ratio_loss(decisions, (0.5, 0.0)).item() == pytest.approx((0.03125 + 0.0625 / 2) / 2)
    assert token_ratio_loss([torch.ones(2, 4)], (1.0,)).item() == 0
    gates = torch.tensor([[[1., 0.], [1., 1.]]])
    assert block_ratio_loss(gates, 0.75).item() == 0
    assert block_ratio_loss(gates, 0.25).item() == pytest.approx(0.25)
    logits = torch.randn(4, 10)
    assert logit_distill_loss(logits, logits).item() == pytest.approx(0, abs=1e-6)
    assert logit_distill_loss(logits, torch.randn(4, 10)).item() > 0.01
    # tokens: slot layout (2 kept patches, the class token in slot 1, 1 pruned patch); teacher in original order
    teacher = torch.randn(1, 4, 3)
    positions = torch.tensor([[2, 1, 3, 0]])
    keep = torch.tensor([[True, True, True, False]])
    cls_at = torch.tensor([1])
    student = teacher[:, positions[0]].clone()
    assert token_distill_loss(student, teacher, positions, keep, cls_at).item() == 0
    moved_pruned, moved_cls, moved_kept = student.clone(), student.clone(), student.clone()
    moved_pruned[0, 3] += 1
    moved_cls[0, 1] += 1
    moved_kept[0, 2] += 1
    assert token_distill_loss(moved_pruned, teacher, positions, keep, cls_at).item() == 0
    assert token_distill_loss(moved_cls, teacher, positions, keep, cls_at).item() == 0
    assert token_distill_loss(moved_kept, teacher, positions, keep, cls_at).item() == pytest.approx(3 / 6)
    loss = DyVMLoss(token_ratio_weight=2.0, block_ratio_weight=3.0, block_keep_ratio=0.25)
    out = loss(dict(decisions=decisions, keep_ratios=(0.5, 0.25), gates=gates, tokens=moved_kept,
                    positions=positions, keep=keep, cls_at=cls_at), logits, logits, teacher)
    assert out['loss_token_ratio'].item() == pytest.approx(2 * 0.03125)
    assert out['loss_block_ratio'].item() == pytest.approx(3 * 0.25)
    assert out['loss_token_distill'].item() == pytest.approx(0.5 * 3 / 6)
    assert all(torch.isfinite(v) for v in out.values())
    with pytest.raises(ValueError, match='block_keep_ratio must be in'):
        DyVMLoss(block_keep_ratio=0)


# ---------------------------------------------------------------- FLOPs
def test_flops_count_each_stage_at_its_length_and_skip_gated_directions():
    from mmssm.analysis.flops import analyze_flops, count_scan_flops, scan_flops
    dense, model = build(dyvm=False), build()
    model.load_state_dict(dense.state_dict(), strict=False)
    x = images(1)
    lengths = [65, 45, 32, 22]
    per_direction = [count_scan_flops(1, 64, n, 4) for n in lengths]
    dense_flops = analyze_flops(dense, (x,))
    pruned_flops = analyze_flops(model, (x,))
    assert scan_flops(dense_flops) == 2 * 4 * count_scan_flops(1, 64, 65, 4)
    assert scan_flops(pruned_flops) == 2 * sum(per_direction)
    # every op of a block scales with its length; the rest is the same, plus the predictors and gates
    dense_modules, pruned_modules = dense_flops.by_module(), pruned_flops.by_module()
    saved = 0
    for index, n in enumerate(lengths):
        assert pruned_modules[f'layers.{index}'] * 65 == dense_modules[f'layers.{index}'] * n
        saved += dense_modules[f'layers.{index}'] - pruned_modules[f'layers.{index}']
    extra = pruned_modules['token_predictors'] + pruned_modules['direction_gates']
    assert 0 < extra < saved / 3
    assert pruned_flops.total() == dense_flops.total() - saved + extra
    with torch.no_grad():  # block 3's backward direction off for every sample: not computed, not counted
        model.direction_gates[3].bias.copy_(torch.tensor([5.0, -5.0]))
    assert scan_flops(analyze_flops(model, (x,))) == 2 * sum(per_direction) - per_direction[3]


def test_get_flops_tool_on_the_demo_config(capsys):
    pytest.importorskip('mmpretrain')
    spec = importlib.util.spec_from_file_location('dyvm_get_flops', osp.join(ROOT, 'tools', 'analysis',
                                                                             'get_flops.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main([DEMO_CONFIG])
    output = capsys.readouterr().out
    # tiny Vim (d_inner 128, N 8, 16 patch tokens): block 0 at 17 tokens, 1 at 12, 2 at 8, 3 at 6
    from mmssm.analysis.flops import count_scan_flops
    expected = 2 * sum(count_scan_flops(1, 128, n, 8) for n in (17, 12, 8, 6))
    scan_line = next(line for line in output.splitlines() if line.strip().startswith('selective scan'))
    assert f'({expected}, ' in scan_line, output


# ---------------------------------------------------------------- the classifier, configs, teacher
def _batch():
    from mmpretrain.structures import DataSample
    torch.manual_seed(0)
    return dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8) for _ in range(2)],
                data_samples=[DataSample().set_gt_label(i) for i in range(2)])


def test_demo_config_trains_one_step_with_a_frozen_teacher():
    pytest.importorskip('mmpretrain')
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    cfg = Config.fromfile(DEMO_CONFIG)
    init_default_scope('mmpretrain')
    cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
    model = PRETRAIN_MODELS.build(cfg.model)
    model.init_weights()
    teacher = model.teacher
    assert isinstance(model.backbone, DyVim) and model.backbone.pruning_layers == (1, 2, 3)
    # the student starts as the teacher (init_from_teacher), predictors and gates aside
    assert torch.equal(model.backbone.layers[3].mixer.in_proj.weight, teacher.backbone.layers[3].mixer.in_proj.weight)
    assert torch.equal(model.head.fc.weight, teacher.head.fc.weight)
    assert not any(k.startswith('teacher') or '_teacher' in k for k in model.state_dict())
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    optimized = {id(p) for group in optim_wrapper.optimizer.param_groups for p in group['params']}
    assert not any(id(p) in optimized for p in teacher.parameters())
    teacher_before = copy.deepcopy(teacher.state_dict())
    student_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    losses = model.train_step(_batch(), optim_wrapper)
    assert {'loss', 'loss_token_ratio', 'loss_block_ratio', 'loss_logit_distill', 'loss_token_distill'} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_before.items())
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, student_before[n])}
    assert {'backbone.token_predictors.0.out_mlp.4.weight', 'backbone.direction_gates.3.weight',
            'backbone.layers.3.mixer.A_log', 'head.fc.weight'} <= changed
    # an EMA copy (deep copy) shares the teacher; inference is the pruned student alone
    assert copy.deepcopy(model).teacher is teacher
    model.eval()
    with torch.no_grad():
        predictions = model.val_step(_batch())
    assert len(predictions) == 2 and predictions[0].pred_score.shape == (4,)


def test_in1k_config_is_the_dyvm_vim_t_recipe():
    pytest.importorskip('mmpretrain')
    from mmengine.config import Config
    cfg = Config.fromfile(IN1K_CONFIG)
    backbone = cfg.model.backbone
    assert cfg.model.type == 'mmssm.DyVMClassifier' and backbone.type == 'mmssm.DyVim'
    assert backbone.arch == 'tiny' and backbone.pruning_layers == (6, 12, 18) and backbone.keep_ratio == 0.9
    assert cfg.model.teacher.backbone.type == 'mmssm.Vim' and cfg.model.init_from_teacher
    assert cfg.model.dyvm_loss == dict(token_ratio_weight=10.0, block_ratio_weight=10.0, block_keep_ratio=0.8,
                                       logit_distill_weight=0.5, token_distill_weight=0.5)
    assert cfg.train_cfg.max_epochs == 30 and cfg.optim_wrapper.optimizer.lr == 3e-5
    assert cfg.optim_wrapper.optimizer.weight_decay == 1e-8 and cfg.auto_scale_lr.base_batch_size == 512
