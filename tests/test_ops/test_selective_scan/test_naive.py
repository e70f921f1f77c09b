"""The oracle itself: zoh against an independent, straightforward statement of Mamba's selective scan."""
import pytest
import torch
import torch.nn.functional as F

from mmssm.ops.selective_scan import selective_scan, selective_scan_naive

from .helpers import assert_close, make_inputs


def mamba_reference(u, delta, A, B, C, D, z, delta_bias):
    """Mamba's selective scan written from its paper: dA = exp(delta A), dBu = delta B u, all at once."""
    delta = F.softplus(delta + delta_bias[:, None])
    dim = u.shape[1]
    if B.dim() == 4:
        B = B.repeat_interleave(dim // B.shape[1], dim=1)  # (batch, dim, N, L)
        C = C.repeat_interleave(dim // C.shape[1], dim=1)
    else:
        B, C = B.unsqueeze(1).expand(-1, dim, -1, -1), C.unsqueeze(1).expand(-1, dim, -1, -1)
    deltaA = torch.exp(torch.einsum('bdl,dn->bdln', delta, A))
    deltaBu = torch.einsum('bdl,bdnl,bdl->bdln', delta, B, u)
    x = torch.zeros_like(deltaA[:, :, 0])
    ys = []
    for i in range(u.shape[2]):
        x = deltaA[:, :, i] * x + deltaBu[:, :, i]
        ys.append(torch.einsum('bdn,bdn->bd', x, C[:, :, :, i]))
    y = torch.stack(ys, dim=2) + u * D[:, None]
    return y * F.silu(z), x


@pytest.mark.parametrize('groups', [None, 1, 2])
def test_zoh_is_mambas_selective_scan(groups):
    inputs = make_inputs(2, 4, 29, 5, groups=groups, grad=False)
    ref_y, ref_h = mamba_reference(**inputs)
    for scan in (selective_scan_naive, selective_scan):
        y, h = scan(**inputs, discretization='zoh', return_last_state=True)
        assert_close(f'{scan.__name__} y', ref_y, y, atol=1e-12)
        assert_close(f'{scan.__name__} last state', ref_h, h, atol=1e-12)


def test_naive_runs_in_float64_and_returns_input_dtype():
    inputs = make_inputs(1, 2, 5, 3, dtype=torch.float32, grad=False)
    y, h = selective_scan_naive(**inputs, discretization='foh', return_last_state=True)
    assert y.dtype == torch.float32 and h.dtype == torch.float64
