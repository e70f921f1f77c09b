"""The channels-last path of the mixers (Triton conv + scan on the matmuls' layouts) against the transposing torch
path of the same weights: output and every gradient, for a bidirectional and a one-directional MambaMixer (zoh,
bilinear) and for MambaVisionMixer (its 'same' convolutions on the two halves); the conv kernel alone too. Run by
test_mamba_mixer_channels_last.py: on the CPU through Triton's interpreter (a subprocess with TRITON_INTERPRET=1),
and compiled on a GPU. ``python channels_last_checks.py [cpu|cuda]`` prints one line per check and exits non-zero
on the first failure."""
import functools
import sys

import torch

from mmssm.models.layers.mamba_mixer import MambaMixer, channels_last_path
from mmssm.models.layers.mamba_vision_mixer import MambaVisionMixer
from mmssm.ops.causal_conv1d import conv1d_channels_last, conv1d_reference


def check_conv(device):
    torch.manual_seed(0)
    batch, length, dim, kernel = 2, 37, 70, 4  # not multiples of the kernel's blocks
    xz = torch.randn(batch, length, 2 * dim, device=device, requires_grad=True)
    weights = [torch.randn(dim, 1, kernel, device=device, requires_grad=True) for _ in range(2)]
    biases = [torch.randn(dim, device=device, requires_grad=True) for _ in range(2)]
    out = conv1d_channels_last([xz[..., :dim]] * 2, weights, biases, ['causal', 'reverse'], activation='silu')
    assert out.shape == (2, batch, length, dim) and out.is_contiguous()
    ref = torch.stack([conv1d_reference(xz[..., :dim].transpose(1, 2), w, b, p, 'silu').transpose(1, 2)
                       for w, b, p in zip(weights, biases, ('causal', 'reverse'))])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(out)
    params = [xz, *weights, *biases]
    grads_ref = torch.autograd.grad((ref * g).sum(), params)
    for a, b in zip(torch.autograd.grad((out * g).sum(), params), grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # the weight gradient's kernel over the whole sequence in one program (above: two segments of 32 steps), and
    # the custom op's own autograd (what torch.compile traces; eager training above runs its autograd.Function)
    import mmssm.ops.causal_conv1d as conv
    assert type(out.grad_fn).__name__ == '_EagerConvBackward', out.grad_fn
    programs, conv.CL_BWD_PROGRAMS = conv.CL_BWD_PROGRAMS, 1
    route, conv.op_route = conv.op_route, lambda tensors: 'op'
    out = conv1d_channels_last([xz[..., :dim]] * 2, weights, biases, ['causal', 'reverse'], activation='silu')
    assert type(out.grad_fn).__name__ != '_EagerConvBackward', out.grad_fn
    for a, b in zip(torch.autograd.grad((out * g).sum(), params), grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    conv.CL_BWD_PROGRAMS, conv.op_route = programs, route
    # MambaVision's: the two halves of one output, 'same' padding, an even and an odd kernel, no bias (and a
    # kernel longer than the weight-gradient kernel's four accumulated taps)
    for kernel in (3, 4, 5):
        weights = [torch.randn(dim, 1, kernel, device=device, requires_grad=True) for _ in range(2)]
        halves = [xz[..., :dim], xz[..., dim:]]
        out = conv1d_channels_last(halves, weights, [None, None], ['same', 'same'], activation='silu')
        ref = torch.stack([conv1d_reference(h.transpose(1, 2), w, None, 'same', 'silu').transpose(1, 2)
                           for h, w in zip(halves, weights)])
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        params = [xz, *weights]
        for a, b in zip(torch.autograd.grad((out * g).sum(), params), torch.autograd.grad((ref * g).sum(), params)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # the custom op: schema, fake implementation against the real one, autograd registration
    from mmssm.ops.causal_conv1d import _conv_cl_op
    arguments = ([xz[..., :dim].detach().requires_grad_()] * 2, [w.detach().squeeze(1).requires_grad_()
                                                                  for w in weights], [], [0, 1], True)
    torch.library.opcheck(_conv_cl_op, arguments)
    from mmssm.ops.causal_conv1d import _conv_cl_bwd_op
    torch.library.opcheck(_conv_cl_bwd_op, (torch.randn(2, batch, length, dim, device=device),
                                            *[[t.detach() for t in group] for group in arguments[:2]], [], [0, 1],
                                            True), test_utils=('test_schema', 'test_faketensor'))
    # no activation, no bias: the gradient of the plain convolution
    out = conv1d_channels_last([xz[..., :dim]], weights[:1], [None], ['causal'])
    ref = conv1d_reference(xz[..., :dim].transpose(1, 2), weights[0], None, 'causal', None).transpose(1, 2)
    torch.testing.assert_close(out[0], ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad((out * g).sum(), [xz, weights[0]]),
                    torch.autograd.grad((ref * g[0]).sum(), [xz, weights[0]])):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    print('ok conv', flush=True)


def assert_same_gradients(label, x, y, mixer, y_ref, ref, rtol, atol, relative=True):
    """Every gradient of (y * g).sum() to x and to mixer's parameters equals ref's (same g): |a - b| <= atol
    (times max|b| with ``relative``) + rtol |b|."""
    g = torch.randn_like(y)
    grads = torch.autograd.grad((y * g).sum(), [x] + list(mixer.parameters()))
    grads_ref = torch.autograd.grad((y_ref * g).sum(), [x] + list(ref.parameters()))
    for name, a, b in zip(['x'] + [n for n, _ in mixer.named_parameters()], grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol * b.abs().max().item() if relative else atol,
                                   msg=f'{label} d{name}')


def check_mixer(device, method, bidirectional):
    torch.manual_seed(0)
    if bidirectional is None:  # MambaVision's mixer
        fast = MambaVisionMixer(16, d_state=4, discretization=method, scan_backend='triton')
        ref = MambaVisionMixer(16, d_state=4, discretization=method, scan_backend='torch')
        x = torch.randn(2, 13, 16, device=device, requires_grad=True)
    else:
        fast = MambaMixer(8, d_state=4, discretization=method, bidirectional=bidirectional, scan_backend='triton')
        ref = MambaMixer(8, d_state=4, discretization=method, bidirectional=bidirectional, scan_backend='torch')
        x = torch.randn(2, 13, 8, device=device, requires_grad=True)
    ref.load_state_dict(fast.state_dict())
    fast, ref = fast.to(device), ref.to(device)
    assert channels_last_path(fast.scan_backend, x) and not channels_last_path(ref.scan_backend, x)
    y, y_ref = fast(x), ref(x)
    label = f'mixer {method} bidirectional={bidirectional}' if bidirectional is not None else 'mambavision mixer'
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5, msg=label)
    with torch.no_grad():  # inference: the kernel called directly, on A_log, D and the dt bias as they are
        torch.testing.assert_close(fast(x), y_ref, rtol=1e-4, atol=1e-5, msg=f'{label} inference')
    assert_same_gradients(label, x, y, fast, y_ref, ref, rtol=1e-4, atol=1e-4)
    print('ok', label, flush=True)


def check_fused_training(device):
    """fused_training (one autograd Function between in_proj and the merge, u and delta recomputed in its
    backward): output and every gradient against the transposing torch path, two directions with conv biases and
    one without (the kernels and methods are those of check_mixer; this checks the Function's own backward); one
    Function node in the graph; under bf16 autocast (float32 weight gradients); and a hook on x_proj keeps the
    unfused path (the Function would skip the module call)."""
    import collections
    torch.manual_seed(0)
    for method, bidirectional, conv_bias in (('zoh', True, True), ('zoh', False, False)):
        options = dict(d_state=4, discretization=method, bidirectional=bidirectional, conv_bias=conv_bias)
        fast = MambaMixer(8, scan_backend='triton', fused_training=True, **options).to(device)
        ref = MambaMixer(8, scan_backend='torch', **options).to(device)
        with torch.no_grad():
            for p in fast.parameters():
                p.add_(0.1 * torch.randn_like(p))
        ref.load_state_dict(fast.state_dict())
        x = torch.randn(1, 9, 8, device=device, requires_grad=True)  # (one sample: the interpreter's time)
        y, y_ref = fast(x), ref(x)
        nodes, stack, seen = collections.Counter(), [y.grad_fn], set()
        while stack:
            node = stack.pop()
            if node is not None and node not in seen:
                seen.add(node)
                nodes[type(node).__name__] += 1
                stack += [n for n, _ in node.next_functions]
        assert nodes['FusedMixerCoreBackward'] == 1 and not nodes['_EagerScanBackward'], sorted(nodes.items())
        label = f'fused training {method} bidirectional={bidirectional} conv_bias={conv_bias}'
        torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5, msg=label)
        assert_same_gradients(label, x, y, fast, y_ref, ref, rtol=1e-4, atol=1e-4)
    ref = MambaMixer(8, d_state=4, scan_backend='torch').to(device)
    fused = MambaMixer(8, d_state=4, scan_backend='triton', fused_training=True).to(device)
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(1, 7, 8, device=device, requires_grad=True)
    with torch.autocast(device, dtype=torch.bfloat16):
        y, y_ref = fused(x), ref(x)
    assert y.dtype == torch.bfloat16
    assert_same_gradients('fused training, bf16 autocast', x, y.float(), fused, y_ref.float(), ref, rtol=5e-2,
                          atol=5e-2)
    assert all(p.grad is None for p in fused.parameters())  # (autograd.grad: nothing accumulated)
    seen = []
    fused.x_proj.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    y = fused(x)
    assert seen and type(y.grad_fn).__name__ != 'FusedMixerCoreBackward'
    print('ok fused training', flush=True)


def check_gaps(device):
    """Token pruning's gap_steps (ToP's hidden-state alignment) on the channels-last path against the transposing
    torch path: with gradients as its gap form (step (1 + g) delta, B / (1 + g)), output and every gradient; in
    inference with the gaps in the kernel."""
    torch.manual_seed(0)
    for bidirectional in (True, False):
        fast = MambaMixer(8, d_state=4, bidirectional=bidirectional, scan_backend='triton').to(device)
        ref = MambaMixer(8, d_state=4, bidirectional=bidirectional, scan_backend='torch').to(device)
        with torch.no_grad():  # steps and states large enough for the gaps to matter
            for p in fast.parameters():
                p.add_(0.5 * torch.randn_like(p))
        ref.load_state_dict(fast.state_dict())
        x = torch.randn(2, 11, 8, device=device, requires_grad=True)
        gaps = tuple(torch.randint(0, 4, (2, 11), device=device).float() for _ in range(2))
        y, y_ref = fast(x, gap_steps=gaps), ref(x, gap_steps=gaps)
        torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(y, ref(x), rtol=1e-3, atol=1e-4)  # the gaps change the output
        with torch.no_grad():  # inference: the gaps in the scan kernel
            torch.testing.assert_close(fast(x, gap_steps=gaps), y_ref, rtol=1e-4, atol=1e-5)
        assert_same_gradients('gaps', x, y, fast, y_ref, ref, rtol=1e-4, atol=1e-4)
    print('ok gap steps', flush=True)


def check_recompute(device):
    """scan_recompute on the channels-last path: output and every gradient equal to the plain channels-last
    mixer's (the Triton conv and scan rerun in the backward)."""
    torch.manual_seed(0)
    plain = MambaMixer(8, d_state=4, scan_backend='triton').to(device)
    recompute = MambaMixer(8, d_state=4, scan_backend='triton', scan_recompute=True).to(device)
    recompute.load_state_dict(plain.state_dict())
    x = torch.randn(2, 11, 8, device=device, requires_grad=True)
    y, y_ref = recompute(x), plain(x)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    assert_same_gradients('recompute', x, y, recompute, y_ref, plain, rtol=1e-5, atol=1e-6, relative=False)
    print('ok scan recompute', flush=True)


def check_no_copies(device):
    """The channels-last forward of MambaMixer moves no activation: no copy, clone, cast, cat, flip or pad among
    the aten ops it runs (float32 weights; views are free), one conv and one scan op, and no merge of the two
    directions (out_proj's matmul does it). (MambaVisionMixer keeps one cat, of its two halves before out_proj.)"""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):

        def __init__(self):
            super().__init__()
            self.ops = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[str(func.overloadpacket)] += 1
            return func(*args, **(kwargs or {}))

    forbidden = {'aten.copy_', 'aten.clone', 'aten._to_copy', 'aten.cat', 'aten.stack', 'aten.flip',
                 'aten.constant_pad_nd', 'aten.contiguous', 'aten.index_select', 'aten.lerp', 'aten.add'}
    mixer = MambaMixer(8, d_state=4, scan_backend='triton').to(device)
    x = torch.randn(2, 6, 8, device=device)
    with torch.no_grad():
        expected = mixer(x)  # (and out_proj's merged weight, kept for the next calls)
    with torch.no_grad(), Record() as record:
        y = mixer(x)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    assert not forbidden & set(record.ops), sorted(record.ops.items())
    assert record.ops['mmssm.conv1d_channels_last'] == 1 and record.ops['mmssm.selective_scan_fwd'] == 1, \
        sorted(record.ops.items())
    print('ok no copies', flush=True)


def _recorded(calls, function, *args, **kwargs):
    calls.append((args, kwargs))
    return function(*args, **kwargs)


def check_parameters_as_they_are(device):
    """A bf16 model's inference calls the scan kernel directly on its parameters as they are: A_log, D and the dt
    bias themselves reach it (no per-call casts or exp on the host), and the output equals the custom op's path
    (A = -exp(A_log) in float32 on the host) to bf16 rounding."""
    import mmssm.models.layers.mamba_mixer as mamba_mixer
    import mmssm.models.layers.mamba_vision_mixer as mamba_vision_mixer
    torch.manual_seed(0)
    for module, mixer, dims in ((mamba_mixer, MambaMixer(8, d_state=4, scan_backend='triton'), 8),
                                (mamba_vision_mixer, MambaVisionMixer(16, d_state=4, scan_backend='triton'), 16)):
        mixer = mixer.to(device, torch.bfloat16)
        x = torch.randn(2, 6, dims, device=device, dtype=torch.bfloat16, requires_grad=True)
        calls, original = [], module.compiled_scan
        module.compiled_scan = functools.partial(_recorded, calls, original)
        try:
            expected = mixer(x)  # with autograd: the custom op
            with torch.no_grad():
                y = mixer(x)
        finally:
            module.compiled_scan = original
        args, kwargs = calls[-1]
        parameters = {id(p) for p in mixer.parameters()}
        assert kwargs['a_log'] and all(id(t) in parameters for group in (args[3], args[6], args[7]) for t in group), \
            'the direct call did not get the parameters themselves'
        torch.testing.assert_close(y, expected.detach(), rtol=2e-2, atol=2e-2)
    print('ok parameters as they are', flush=True)


def check_transposed_projection(device):
    """An in_proj whose output is a transposed view (2:4 semi-structured matmuls return one) gives the same
    outputs on the channels-last path, for both mixers (the kernels need unit channel strides: one copy then)."""

    class Transposed(torch.nn.Module):

        def __init__(self, linear):
            super().__init__()
            self.linear = linear

        def forward(self, x):
            return self.linear(x).transpose(-1, -2).contiguous().transpose(-1, -2)

    torch.manual_seed(0)
    for mixer, dims in ((MambaMixer(8, d_state=4, scan_backend='triton'), 8),
                        (MambaVisionMixer(16, d_state=4, scan_backend='triton'), 16)):
        mixer = mixer.to(device)
        x = torch.randn(2, 7, dims, device=device)
        with torch.no_grad():
            expected = mixer(x)
            mixer.in_proj = Transposed(mixer.in_proj)
            assert mixer.in_proj(x).stride(-1) != 1
            torch.testing.assert_close(mixer(x), expected, rtol=0, atol=0)
    print('ok transposed in_proj output', flush=True)


def check_compiled(device):
    """torch.compile(fullgraph=True) of the channels-last mixer (aot_eager: the ops' fake implementations, the
    merged output layout and out_proj's merged weight traced), output and gradients against the torch path, and
    inference."""
    torch.manual_seed(0)
    fast = MambaMixer(8, d_state=4, scan_backend='triton').to(device)
    ref = MambaMixer(8, d_state=4, scan_backend='torch').to(device)
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 9, 8, device=device, requires_grad=True)
    compiled = torch.compile(fast, fullgraph=True, backend='aot_eager')
    y, y_ref = compiled(x), ref(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    assert_same_gradients('compiled', x, y, fast, y_ref, ref, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), y_ref, rtol=1e-4, atol=1e-5)
    print('ok compiled', flush=True)


FAST = ('no_copies', 'fused_training', 'parameters_as_they_are', 'transposed_projection', 'conv', 'gaps',
        'mixer zoh True', 'mixer zoh False', 'mixer zoh None')
SLOW = ('recompute', 'compiled', 'mixer bilinear True')  # the slowest through the interpreter (test-slow there)


def run(device, names):
    for name in names:
        if name.startswith('mixer '):
            _, method, bidirectional = name.split()
            check_mixer(device, method, None if bidirectional == 'None' else bidirectional == 'True')
        else:
            globals()[f'check_{name}'](device)


if __name__ == '__main__':
    device = sys.argv[1] if len(sys.argv) > 1 else 'cpu'
    part = sys.argv[2] if len(sys.argv) > 2 else 'all'
    run(device, dict(fast=FAST, slow=SLOW, all=FAST + SLOW)[part])
