"""S4D and S5 mixers: float64 parity (forward and every gradient) with a plain step-by-step recurrence written
here, float32 against float64, initializations, and the MambaVision ``mixer`` option."""
import math

import pytest
import torch

from mmssm.models import MambaVision
from mmssm.models.layers import MambaVisionMixer, S4DMixer, S5Mixer
from mmssm.models.layers.s5 import linear_recurrence_scan
from mmssm.registry import MODELS

MIXERS = {'s4d': S4DMixer, 's5': S5Mixer}


def assert_close(name, ref, out, tol):
    assert out.shape == ref.shape, f'{name}: shape {tuple(out.shape)} != {tuple(ref.shape)}'
    assert torch.isfinite(out).all(), f'{name}: not finite'
    diff = (out.double() - ref.double()).abs().max().item()
    error = diff / max(ref.double().abs().max().item(), 1e-30)
    assert error <= tol, f'{name}: max abs diff {diff:.3g}, relative error {error:.3g} > {tol:.1g}'


# ---------------------------------------------------------------------------------------- step-by-step references
def recurrence(Abar, Bbar, C, u):
    """x_k = Abar * x_{k-1} + Bbar u_k, y_k = Re(C x_k), one step at a time. u: (batch, L, H) real; Abar: (S,);
    Bbar: (S, H) applied as ``Bbar @ u_k`` (S5) or, for S4D, via ``diagonal_input``."""
    batch, length, _ = u.shape
    state = torch.zeros(batch, Abar.shape[0], dtype=Abar.dtype)
    outs = []
    for k in range(length):
        state = Abar * state + u[:, k].to(Bbar.dtype) @ Bbar.transpose(0, 1)
        outs.append((state @ C.transpose(0, 1)).real)
    return torch.stack(outs, dim=1)


def s4d_reference(mixer, x):
    """x: (batch, H, L). Each channel h is its own SSM with N states: x_k = exp(dt A) x_{k-1} + (exp(dt A) - 1) / A
    B u_k, y = Re(C x), forward on the sequence and backward on the flipped one."""
    dt, A, B, C, D = mixer.ssm_parameters(torch.float64)
    u = x.transpose(1, 2)  # (batch, L, H)
    y = D * u
    for h in range(A.shape[0]):
        Abar = torch.exp(dt[h] * A[h])
        Bbar = ((Abar - 1) / A[h] * B[h]).unsqueeze(-1)  # (N, 1)
        channel = u[:, :, h:h + 1]
        y_h = recurrence(Abar, Bbar, C[0, h:h + 1], channel)
        y_h = y_h + recurrence(Abar, Bbar, C[1, h:h + 1], channel.flip(1)).flip(1)
        y = torch.cat([y[..., :h], y[..., h:h + 1] + y_h, y[..., h + 1:]], dim=-1)
    return y.transpose(1, 2)


def s5_reference(mixer, x):
    """x: (batch, H, L). One SSM with P states over all channels, forward and backward (own C each)."""
    dt, Lambda, B, C, D = mixer.ssm_parameters(torch.float64)
    u = x.transpose(1, 2)
    Abar = torch.exp(Lambda * dt)
    Bbar = ((Abar - 1) / Lambda).unsqueeze(-1) * B
    y = recurrence(Abar, Bbar, C[0], u) + recurrence(Abar, Bbar, C[1], u.flip(1)).flip(1) + D * u
    return y.transpose(1, 2)


REFERENCES = {'s4d': s4d_reference, 's5': s5_reference}


def reference_forward(kind, mixer, hidden):
    """The module's own projections and convolutions around the reference SSM."""
    x, z = mixer.branches(hidden)
    y = torch.cat([REFERENCES[kind](mixer, x), z], dim=1)
    return mixer.out_proj(y.transpose(1, 2))


def randomize(mixer):
    """Move every parameter off its structured initialization, so that parity covers general values."""
    with torch.no_grad():
        for name, param in mixer.named_parameters():
            if name not in ('log_dt', 'A_log', 'Lambda_log'):
                param.add_(0.1 * torch.randn_like(param))


# ------------------------------------------------------------------------------------------------ parity, float64
@pytest.mark.parametrize('kind', sorted(MIXERS))
@pytest.mark.parametrize('batch,length', [(2, 1), (3, 7), (2, 63)])
def test_float64_matches_the_recurrence(kind, batch, length):
    torch.manual_seed(length)
    mixer = MIXERS[kind](6, d_state=5, d_conv=3, expand=1, bias=True, conv_bias=True).double()
    randomize(mixer)
    hidden = torch.randn(batch, length, 6, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(batch, length, 6, dtype=torch.float64)

    out = mixer(hidden)
    grads = torch.autograd.grad(out, [hidden, *mixer.parameters()], grad_out)
    ref = reference_forward(kind, mixer, hidden)
    ref_grads = torch.autograd.grad(ref, [hidden, *mixer.parameters()], grad_out)

    assert_close('output', ref, out, 1e-10)
    names = ['input'] + [name for name, _ in mixer.named_parameters()]
    for name, ref_grad, grad in zip(names, ref_grads, grads):
        assert_close(f'grad {name}', ref_grad, grad, 1e-10)


@pytest.mark.parametrize('kind', sorted(MIXERS))
def test_float32_close_to_float64(kind):
    torch.manual_seed(0)
    mixer = MIXERS[kind](8, d_state=6)
    randomize(mixer)
    mixer64 = MIXERS[kind](8, d_state=6).double()
    mixer64.load_state_dict(mixer.state_dict())
    hidden = torch.randn(2, 40, 8)
    hidden32 = hidden.clone().requires_grad_()
    hidden64 = hidden.double().requires_grad_()
    out32, out64 = mixer(hidden32), mixer64(hidden64)
    assert out32.dtype == torch.float32
    assert_close('float32 output', out64, out32, 1e-4)
    out32.square().sum().backward()
    out64.square().sum().backward()
    assert_close('float32 input grad', hidden64.grad, hidden32.grad, 1e-4)
    for (name, p32), p64 in zip(mixer.named_parameters(), mixer64.parameters()):
        assert_close(f'float32 grad {name}', p64.grad, p32.grad, 1e-4)


@pytest.mark.parametrize('length', [1, 2, 5, 8, 33])
def test_parallel_scan_matches_a_loop(length):
    torch.manual_seed(length)
    a = torch.randn(length, 3, dtype=torch.complex128) * 0.5
    b = torch.randn(2, length, 3, dtype=torch.complex128)
    state, ref = torch.zeros(2, 3, dtype=torch.complex128), []
    for k in range(length):
        state = a[k] * state + b[:, k]
        ref.append(state)
    assert_close('scan', torch.view_as_real(torch.stack(ref, 1)),
                 torch.view_as_real(linear_recurrence_scan(a, b)), 1e-12)


# ------------------------------------------------------------------------------------------------ initialization
def test_s4d_initializations():
    lin = S4DMixer(8, d_state=6)
    A = torch.complex(-torch.exp(lin.A_log), lin.A_imag)
    assert torch.allclose(A.real, torch.full_like(A.real, -0.5))
    assert torch.allclose(A.imag, math.pi * torch.arange(6.).expand(4, 6))
    assert torch.equal(lin.B, torch.view_as_real(torch.ones(4, 6, dtype=torch.complex64)))
    inv = S4DMixer(8, d_state=6, init='inv')
    n = torch.arange(6.)
    assert torch.allclose(inv.A_imag, (6 / math.pi * (6 / (2 * n + 1) - 1)).expand(4, 6))
    dt = torch.exp(lin.log_dt)
    assert ((dt >= 0.001 - 1e-9) & (dt <= 0.1 + 1e-9)).all()


def test_s5_initialization():
    mixer = S5Mixer(8, d_state=8)
    Lambda = torch.complex(-torch.exp(mixer.Lambda_log), mixer.Lambda_imag)
    assert (Lambda.real < 0).all()
    assert torch.allclose(Lambda.real, torch.full_like(Lambda.real, -0.5))
    # the normal part of HiPPO-LegS is real: its eigenvalues come in conjugate pairs
    imag = mixer.Lambda_imag.sort().values
    assert torch.allclose(imag, -imag.flip(0), atol=1e-5)
    assert mixer.B.shape == (8, 4, 2) and mixer.C.shape == (2, 4, 8, 2)
    dt = torch.exp(mixer.log_dt)
    assert ((dt >= 0.001 - 1e-9) & (dt <= 0.1 + 1e-9)).all()


@pytest.mark.parametrize('kind', sorted(MIXERS))
def test_registered_and_checked(kind):
    # scope-qualified, as configs name it: earlier tests may leave another default scope
    assert isinstance(MODELS.build(dict(type=f'mmssm.{MIXERS[kind].__name__}', embed_dims=4)), MIXERS[kind])
    with pytest.raises(ValueError, match="only discretization 'zoh'"):
        MIXERS[kind](4, discretization='rk4')
    with pytest.raises(ValueError, match='must be an even number'):
        MIXERS[kind](3)
    with pytest.raises(ValueError, match=r'expected input of shape \(batch, L, 4\)'):
        MIXERS[kind](4)(torch.zeros(1, 3, 5))
    if kind == 's4d':
        with pytest.raises(ValueError, match="unknown init 'legs'; choose one of"):
            S4DMixer(4, init='legs')


# ------------------------------------------------------------------------------------------------ in MambaVision
@pytest.mark.parametrize('kind', sorted(MIXERS))
def test_mamba_vision_with_mixer_trains(kind):
    torch.manual_seed(0)
    model = MambaVision('test', mixer=kind, out_indices=(0, 1, 2, 3), out_norm='ln2d')
    mixers = [m for m in model.modules() if isinstance(m, (MambaVisionMixer, S4DMixer, S5Mixer))]
    assert mixers and all(type(m) is MIXERS[kind] for m in mixers)
    outs = model(torch.randn(2, 3, 70, 45))
    assert [tuple(o.shape[2:]) for o in outs] == [(18, 12), (9, 6), (5, 3), (3, 2)]
    sum(o.square().mean() for o in outs).backward()
    missing = [name for name, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_mamba_vision_default_mixer_is_official():
    model = MambaVision('test')
    assert model.mixer == 's6'
    assert all(type(m.mixer) is MambaVisionMixer for m in model.levels[2].blocks[:2])


def test_mamba_vision_rejects_unknown_mixer():
    with pytest.raises(ValueError, match=r"unknown mixer 's7'; choose one of \('s6', 's4d', 's5'\)"):
        MambaVision('test', mixer='s7')
    with pytest.raises(ValueError, match="mixer 's5' takes discretization 'zoh' only, got 'rk4'"):
        MambaVision('test', mixer='s5', discretization='rk4')
