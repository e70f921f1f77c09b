import pytest
import torch
import torch.nn.functional as F

from mmssm.models.layers import MambaMixer, TokenSqueezeExcitation, VisionRoPE2d, resize_pos_embed
from mmssm.ops.selective_scan import METHODS


def reference_direction(x, z, conv, x_proj, dt_proj, a_log, d_skip, dt_rank, d_state):
    """One direction of Mamba's mixer, written as the original code's steps, as a plain loop over tokens.
    x, z: (batch, L, D) in scan order."""
    length = x.shape[1]
    kernel = conv.weight.shape[-1]
    padded = F.pad(x.transpose(1, 2), (kernel - 1, 0))  # causal: step t sees t-K+1..t
    conv_out = torch.stack([(padded[:, :, t:t + kernel] * conv.weight[:, 0]).sum(-1) for t in range(length)], 1)
    u = F.silu(conv_out + conv.bias)
    dt, b, c = (u @ x_proj.weight.T).split([dt_rank, d_state, d_state], dim=-1)
    delta = F.softplus(dt @ dt_proj.weight.T + dt_proj.bias)
    a = -torch.exp(a_log)
    h = torch.zeros(x.shape[0], x.shape[2], d_state, dtype=x.dtype)
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, t, :, None] * a) * h + delta[:, t, :, None] * b[:, t, None, :] * u[:, t, :, None]
        ys.append((h * c[:, t, None, :]).sum(-1) + d_skip * u[:, t])
    return torch.stack(ys, 1) * F.silu(z)


def reference_vim_mixer(m, hidden):
    x, z = (hidden @ m.in_proj.weight.T).chunk(2, dim=-1)
    args = (m.dt_rank, m.d_state)
    y_f = reference_direction(x, z, m.conv1d, m.x_proj, m.dt_proj, m.A_log, m.D, *args)
    # Vim's backward direction: flip the tokens, run the same computation with the _b parameters, flip back
    y_b = reference_direction(x.flip(1), z.flip(1), m.conv1d_b, m.x_proj_b, m.dt_proj_b, m.A_b_log, m.D_b,
                              *args).flip(1)
    return ((y_f + y_b) / 2) @ m.out_proj.weight.T


@pytest.mark.parametrize('length', [1, 5, 37])
def test_zoh_bidirectional_mixer_is_vims(length):
    torch.manual_seed(0)
    mixer = MambaMixer(24, d_state=8, expand=2).double()
    with torch.no_grad():  # make the parameters less regular than the init
        for p in mixer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    hidden = torch.randn(3, length, 24, dtype=torch.float64)
    torch.testing.assert_close(mixer(hidden), reference_vim_mixer(mixer, hidden), rtol=1e-10, atol=1e-10)


def test_unidirectional_mixer_is_mambas():
    torch.manual_seed(0)
    mixer = MambaMixer(16, d_state=4, bidirectional=False).double()
    hidden = torch.randn(2, 11, 16, dtype=torch.float64)
    x, z = (hidden @ mixer.in_proj.weight.T).chunk(2, dim=-1)
    y = reference_direction(x, z, mixer.conv1d, mixer.x_proj, mixer.dt_proj, mixer.A_log, mixer.D, mixer.dt_rank,
                            mixer.d_state)
    torch.testing.assert_close(mixer(hidden), y @ mixer.out_proj.weight.T, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('method', METHODS)
def test_mixer_gradients_match_float64(method):
    torch.manual_seed(0)
    mixer = MambaMixer(16, d_state=4, discretization=method, se_ratio=4)
    hidden = torch.randn(2, 9, 16)
    mixer64 = MambaMixer(16, d_state=4, discretization=method, se_ratio=4).double()
    mixer64.load_state_dict(mixer.state_dict())
    mixer(hidden).square().sum().backward()
    mixer64(hidden.double()).square().sum().backward()
    for (name, p), q in zip(mixer.named_parameters(), mixer64.parameters()):
        torch.testing.assert_close(p.grad, q.grad.float(), rtol=2e-4, atol=2e-5, msg=name)


def test_mamba_init():
    mixer = MambaMixer(32, d_state=16)
    assert torch.equal(mixer.A_log[3], torch.log(torch.arange(1, 17, dtype=torch.float32)))
    assert torch.equal(mixer.D, torch.ones(64))
    dt = F.softplus(mixer.dt_proj.bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001


@pytest.mark.parametrize('kwargs, match', [
    (dict(discretization='tustin'), "unknown discretization 'tustin'"),
    (dict(conv_type='dw'), "unknown conv_type 'dw'"),
    (dict(dt_rank=0), 'dt_rank'),
    (dict(d_state=0), 'd_state'),
    (dict(dt_min=0.2, dt_max=0.1), 'dt_min'),
    (dict(expand=0), r'expand must be a positive number .* got expand=0 '),
    (dict(expand=-1.5), 'got expand=-1.5 '),
    (dict(expand=0.01), r'expand \* embed_dims >= 1 .* got expand=0.01 '),
])
def test_bad_mixer_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MambaMixer(16, **kwargs)


def test_mixer_bad_input():
    with pytest.raises(ValueError, match=r'\(batch, L, 16\)'):
        MambaMixer(16)(torch.randn(2, 5, 8))


def test_squeeze_excitation():
    se = TokenSqueezeExcitation(8, ratio=2)
    x = torch.randn(2, 8, 10)
    scale = torch.sigmoid(se.fc2(torch.relu(se.fc1(x.mean(2)))))
    torch.testing.assert_close(se(x), x * scale[:, :, None])
    with pytest.raises(ValueError, match='ratio'):
        TokenSqueezeExcitation(8, ratio=0.5)


def test_rope_rotates_pairs_by_position():
    rope = VisionRoPE2d(8, train_grid=(2, 3))
    tokens = torch.randn(1, 6, 8)
    out = rope(tokens, (2, 3))
    # rotations keep each channel pair's norm, and position (0, 0) is not rotated
    pair_norm = lambda t: t.unflatten(-1, (4, 2)).norm(dim=-1)  # noqa: E731
    torch.testing.assert_close(pair_norm(out), pair_norm(tokens))
    torch.testing.assert_close(out[:, 0], tokens[:, 0])
    # token (row 1, col 2): first half rotates by row 1 angles, second half by column 2 angles
    inv_freq = 10000 ** (-torch.arange(2, dtype=torch.float64) / 2)
    angle = torch.cat([1 * inv_freq, 2 * inv_freq]).float()
    x = tokens[0, 5].unflatten(-1, (4, 2))
    expected = torch.stack([x[:, 0] * angle.cos() - x[:, 1] * angle.sin(),
                            x[:, 0] * angle.sin() + x[:, 1] * angle.cos()], -1).flatten()
    torch.testing.assert_close(out[0, 5], expected)
    with pytest.raises(ValueError, match='multiple of 4'):
        VisionRoPE2d(6, (2, 2))


def test_resize_pos_embed_keeps_class_slot_and_identity():
    pos = torch.randn(1, 17, 4)
    torch.testing.assert_close(resize_pos_embed(pos, (4, 4), (4, 4), cls_index=8), pos)
    bigger = resize_pos_embed(pos, (4, 4), (6, 8), cls_index=8)
    assert bigger.shape == (1, 49, 4)
    torch.testing.assert_close(bigger[:, 24], pos[:, 8])
    head = resize_pos_embed(pos, (4, 4), (2, 2), cls_index=0)
    torch.testing.assert_close(head[:, 0], pos[:, 0])
    with pytest.raises(ValueError, match='does not fit the grid'):
        resize_pos_embed(pos, (3, 3), (4, 4), cls_index=0)


@pytest.mark.parametrize('options', [dict(), dict(bidirectional=False, se_ratio=4),
                                     dict(conv_type='inverted_residual')])
def test_scan_recompute_gives_the_same_gradients_from_less_saved_memory(options):
    """scan_recompute: output and every gradient equal to the plain mixer's, with the part between in_proj and
    out_proj not saved (recomputed in the backward); also with token-pruning gaps."""
    torch.manual_seed(0)
    plain = MambaMixer(8, d_state=4, scan_backend='torch', **options)
    recompute = MambaMixer(8, d_state=4, scan_backend='torch', scan_recompute=True, **options)
    recompute.load_state_dict(plain.state_dict())
    x = torch.randn(2, 9, 8, requires_grad=True)
    gaps = None if not options.get('bidirectional', True) else \
        tuple(torch.randint(0, 3, (2, 9)).float() for _ in range(2))
    saved = []
    for mixer in (plain, recompute):
        packed = []

        def pack(t, sink=packed):
            sink.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = mixer(x, gap_steps=gaps)
        grads = torch.autograd.grad((y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum(),
                                    [x, *mixer.parameters()])
        saved.append((sum(packed), y, grads))
    assert saved[1][0] < 0.5 * saved[0][0], (saved[1][0], saved[0][0])
    torch.testing.assert_close(saved[1][1], saved[0][1], rtol=0, atol=0)
    for a, b in zip(saved[1][2], saved[0][2]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    with torch.no_grad():  # inference: no checkpoint
        torch.testing.assert_close(recompute(x, gap_steps=gaps), plain(x, gap_steps=gaps), rtol=0, atol=0)
