import os

import torch

# MMSSM_TEST_DEVICE=cuda runs the operator tests on a GPU (the reference loop then runs there too, in float64).
DEVICE = os.environ.get('MMSSM_TEST_DEVICE', 'cpu')


def assert_close(name, ref, out, atol, rtol=0.0):
    """Fail on NaN/inf, or when |out - ref| > atol + rtol * |ref| anywhere; report the worst difference."""
    assert out.shape == ref.shape, f'{name}: shape {tuple(out.shape)} != {tuple(ref.shape)}'
    out, ref = out.double(), ref.double()
    assert torch.isfinite(out).all(), f'{name}: non-finite values'
    diff = (out - ref).abs()
    allowed = atol + rtol * ref.abs()
    worst = (diff - allowed).argmax()
    assert (diff <= allowed).all(), (
        f'{name}: max abs diff {diff.max().item():.3e}, rel {(diff / ref.abs().clamp_min(1e-30)).max().item():.3e}'
        f' (at {worst.item()}: {out.flatten()[worst].item():.6e} vs {ref.flatten()[worst].item():.6e})')


def make_inputs(batch, dim, length, state, groups=None, dtype=torch.float64, seed=0, device=DEVICE,
                a_range=(0.2, 1.2), delta_scale=0.5, grad=True):
    """Random scan inputs: A in -a_range, delta softplus(N(0, delta_scale) + bias) around 0.3-1.2."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=generator, dtype=torch.float64) * scale).to(device, dtype)

    bc_shape = (batch, state, length) if groups is None else (batch, groups, state, length)
    low, high = a_range
    inputs = dict(
        u=randn(batch, dim, length),
        delta=randn(batch, dim, length, scale=delta_scale),
        A=-(low + (high - low) * torch.rand(dim, state, generator=generator, dtype=torch.float64)).to(device),
        B=randn(*bc_shape), C=randn(*bc_shape),
        D=randn(dim), z=randn(batch, dim, length), delta_bias=randn(dim, scale=0.3) - 0.5)
    if grad:
        for tensor in inputs.values():
            tensor.requires_grad_()
    return inputs


def float64_copies(inputs):
    """The same values in float64, as fresh leaves (for the oracle side of a comparison)."""
    return {name: None if t is None else t.detach().double().requires_grad_(t.requires_grad)
            for name, t in inputs.items()}


def outputs_and_grads(function, inputs, seed=1, **kwargs):
    """y, the last state and the gradients of a random weighting of both with respect to every input that
    requires grad, from function(**inputs, return_last_state=True, **kwargs); all as float64, by name."""
    y, h = function(**inputs, return_last_state=True, **kwargs)
    generator = torch.Generator().manual_seed(seed)
    weight_y = torch.randn(y.shape, generator=generator, dtype=torch.float64).to(y.device)
    weight_h = torch.randn(h.shape, generator=generator, dtype=torch.float64).to(h.device)
    names = [name for name, t in inputs.items() if t is not None and t.requires_grad]
    grads = torch.autograd.grad((y.double() * weight_y).sum() + (h.double() * weight_h).sum(),
                                [inputs[name] for name in names])
    results = {'y': y.double(), 'last state': h.double()}
    results.update({f'd{name}': grad.double() for name, grad in zip(names, grads)})
    return results


def assert_all_close(label, reference, results, relative):
    """assert_close of every result, each to ``relative`` times the largest value of its reference."""
    assert reference.keys() == results.keys(), f'{label}: {sorted(results)} != {sorted(reference)}'
    for name, ref in reference.items():
        assert_close(f'{label} {name}', ref, results[name], atol=relative * ref.abs().max().item())
