"""FLOP counting that includes the selective scan, on top of MMEngine's jit-trace-based ``FlopAnalyzer``.

MMEngine's analyzer (fvcore's) traces the model and counts the operators it has a handle for (linear, conv,
matmul, ...). The torch selective scan is a ``torch.autograd.Function`` with a Python loop: the trace records it
as one opaque ``prim::PythonOp`` that no handle counts, so a plain count leaves the scan out entirely.

Here, only inside :func:`scan_flop_counting`, the operator's torch implementation
(``mmssm.ops.selective_scan._selective_scan_torch``, which ``selective_scan`` and
``selective_scan_bidirectional`` call for every direction) is routed through a ``torch.library`` custom op,
``mmssm_analysis::selective_scan``, that computes exactly the same thing. The trace then holds the whole scan of
one direction (discretization, recurrence, contraction with C, D skip and z gating) as one node, and
:func:`selective_scan_flop_jit`, the handle for that node, counts it with :func:`count_scan_flops`. Nothing
inside the scan reaches the trace as a separate op, so nothing is counted twice; every other op of the model is
counted by MMEngine's own handles exactly as without the scan handle. Outside the context the scan's normal code
path is untouched.

    from mmssm.analysis.flops import analyze_flops
    analyzer = analyze_flops(model, (inputs,))      # a traced mmengine FlopAnalyzer
    analyzer.total()                                # everything, scan included
    analyzer.by_operator()['selective_scan']        # the scan's part

``with scan_flop_counting(): mmengine.analysis.get_model_complexity_info(model, ...)`` counts the scan too.

On a GPU the scan runs on a compiled backend (Triton or the CUDA extension) through the custom op
``mmssm::selective_scan_fwd``, which a jit trace cannot record (its ``reverse`` argument is a list of bools,
which ``torch.jit.trace`` refuses). Inside the context, the backends' entry point
(``mmssm.ops.selective_scan.compiled.scan``, one call for one or both directions) goes through
``mmssm_analysis::compiled_selective_scan`` instead, which calls it unchanged (the same kernels run) and takes
``reverse`` as ints; :func:`compiled_scan_flop_jit` counts that node with the same formula, per direction, under
the same ``by_operator`` key.
"""
import contextlib
import functools
import os
from collections import Counter

import torch
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis import complexity_analysis as _mmengine_complexity
from mmengine.analysis.jit_handles import get_shape

import mmssm.ops.selective_scan as _scan_package
import mmssm.ops.selective_scan.compiled as _compiled_package
from mmssm.ops.selective_scan import METHODS, NEIGHBOURS

SCAN_OP = 'mmssm_analysis::selective_scan'
SCAN_OP_KEY = 'selective_scan'  # the op's name in FlopAnalyzer.by_operator()
COMPILED_SCAN_OP = 'mmssm_analysis::compiled_selective_scan'  # the Triton / CUDA backends' scan, inside the context

# FLOPs per (batch, dim, L, N) element to evaluate A_bar(x) and the input weights W_j(x) from x = delta * a, as
# written in docs/discretization.md. Rule: +, -, *, / and exp count 1 each, a multiply followed by an add
# (Horner steps, scaled accumulations) counts 1, constants are free. For the exponential integrators the phi
# functions are counted in their closed form phi_{k+1} = (phi_k - 1/k!) / x (one reciprocal 1/x shared by all,
# then a subtraction and a multiplication each) and mu_k = k! phi_{k+1} costs a multiplication for k >= 2.
DISCRETIZATION_FLOPS = {
    # A_bar = exp(x); W_0 = 1
    'zoh': 1,
    # r = 1 / (2 - x): 2; A_bar = (2 + x) r: 2; W_0 = W_1 = r
    'bilinear': 4,
    # exp, 1/x: 2; phi_1, phi_2: 4; W_0 = mu_1; W_1 = mu_0 - mu_1: 1
    'foh': 7,
    # exp, 1/x: 2; phi_1..phi_3: 6; mu_2: 1; W_0 = (mu_2 + mu_1)/2: 2, W_1 = mu_0 - mu_2: 1, W_2 = (mu_2 - mu_1)/2: 2
    'poly': 14,
    # exp, 1/x: 2; phi_1..phi_4: 8; mu_2, mu_3: 2; W_0 = (mu_3 + 3 mu_2 + 2 mu_1)/6: 3,
    # W_1 = -(mu_3 + 2 mu_2 - mu_1 - 2 mu_0)/2: 4, W_2 = (mu_3 + mu_2 - 2 mu_1)/2: 3, W_3 = -(mu_3 - mu_1)/6: 2
    'highorder': 24,
    # A_bar = 1 + x + x^2/2 + x^3/6 + x^4/24 (Horner): 4; p = (4 + 2x + x^2/2)/6: 3;
    # q = (1 + x + x^2/2 + x^3/4)/6: 4; W_0 = 1/6 + 5p/16, W_1 = q + 15p/16, W_2 = -5p/16, W_3 = p/16: 4
    'rk4': 15,
}


def taps(discretization: str) -> int:
    """Samples each step reads: the current one and ``NEIGHBOURS`` earlier ones (1 for zoh, 2 to 4 otherwise)."""
    return NEIGHBOURS[discretization] + 1


def scan_flops_per_element(discretization: str) -> int:
    """FLOPs per (batch, dim, L, N) element of one direction (see :func:`count_scan_flops`)."""
    if discretization not in METHODS:
        raise ValueError(f'discretization must be one of {METHODS}, got {discretization!r}.')
    # per tap: (delta u_{t-j}) * B_{t-j}[n], then accumulated with weight W_j (a multiply-add); zoh's W_0 is 1
    input_term = 1 if discretization == 'zoh' else 2 * taps(discretization)
    return 1 + DISCRETIZATION_FLOPS[discretization] + input_term + 1 + 1


def scan_flops_per_token(discretization: str, with_d: bool = True, with_z: bool = True) -> int:
    """FLOPs per (batch, dim, L) element of one direction (see :func:`count_scan_flops`)."""
    if discretization not in METHODS:
        raise ValueError(f'discretization must be one of {METHODS}, got {discretization!r}.')
    return taps(discretization) + int(bool(with_d)) + int(bool(with_z))


def count_scan_flops(batch: int, dim: int, length: int, d_state: int, discretization: str = 'zoh',
                     bidirectional: bool = False, with_d: bool = True, with_z: bool = True) -> int:
    """FLOPs of a selective scan, counting a multiply-add as one FLOP (MMEngine's / fvcore's convention).

    Per direction::

        batch * dim * length * (d_state * per_element + per_token)

        per_element = 1                           x = delta_t * A[d, n]
                      + DISCRETIZATION_FLOPS[m]   A_bar(x) and the weights W_j(x) (zoh 1, bilinear 4, foh 7,
                                                  poly 14, highorder 24, rk4 15; derived in DISCRETIZATION_FLOPS)
                      + input                     sum_j W_j (delta_t u_{t-j}) B_{t-j}[n]: per tap one multiply by
                                                  B and one multiply-add with W_j, so 2 * taps; zoh (W_0 = 1) 1
                      + 1                         state update h_t = A_bar h_{t-1} + input (multiply-add)
                      + 1                         output contraction y_t += C_t[n] h_t[n] (multiply-add)
        per_token   = taps                        delta_t * u_{t-j} for each tap
                      + with_d                    y += D u (multiply-add)
                      + with_z                    y *= silu(z) (the multiplication)

    with taps = 1 + NEIGHBOURS[m] (zoh 1; foh, bilinear 2; poly 3; highorder, rk4 4). So per element zoh 5,
    bilinear 11, foh 14, poly 23, rk4 26, highorder 35. ``bidirectional`` doubles the count (a Vim block's two
    scans have the same shapes).

    Not counted, as MMEngine counts no activation or bias elsewhere in a model: the softplus of delta, the
    addition of delta_bias and the silu of z. The count follows the formulas, not how the torch path evaluates
    them (it also computes the Taylor branch of the phi functions near x = 0 and selects elementwise).
    """
    for name, value in (('batch', batch), ('dim', dim), ('length', length), ('d_state', d_state)):
        if int(value) != value or value < 0:
            raise ValueError(f'count_scan_flops: {name} must be a non-negative int, got {value!r}.')
    per_direction = batch * dim * length * (d_state * scan_flops_per_element(discretization)
                                            + scan_flops_per_token(discretization, with_d, with_z))
    return int(per_direction * (2 if bidirectional else 1))


# --------------------------------------------------------------------------- the traced op
@torch.library.custom_op(SCAN_OP, mutates_args=())
def _scan_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             D: torch.Tensor | None, z: torch.Tensor | None, delta_bias: torch.Tensor | None,
             delta_softplus: bool, discretization: str, reverse: bool,
             chunk_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One direction of the selective scan as a single dispatcher op (used only inside scan_flop_counting)."""
    return _ORIGINAL_SCAN[0](u, delta, A, B, C, D, z, delta_bias, delta_softplus, discretization, reverse,
                             chunk_size)


@_scan_op.register_fake
def _scan_op_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus, discretization, reverse, chunk_size):
    state_dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    return (torch.empty_like(u, memory_format=torch.contiguous_format),
            u.new_empty((u.shape[0], u.shape[1], A.shape[1]), dtype=state_dtype))


_ORIGINAL_SCAN = [None]


def _routed_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, discretization, reverse, chunk_size):
    return torch.ops.mmssm_analysis.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                                   discretization, reverse, chunk_size)


def _is_none(value) -> bool:
    return value.type().kind() == 'NoneType'


def selective_scan_flop_jit(inputs: list, outputs: list) -> int:
    """MMEngine/fvcore op handle of ``mmssm_analysis::selective_scan``: :func:`count_scan_flops` of one direction,
    with the shapes, the method and the presence of D and z read from the traced node."""
    u_shape, a_shape = get_shape(inputs[0]), get_shape(inputs[2])
    if u_shape is None or a_shape is None:
        raise RuntimeError('selective_scan_flop_jit: the trace has no shapes for the scan inputs.')
    batch, dim, length = u_shape
    discretization = inputs[9].toIValue()
    return count_scan_flops(batch, dim, length, a_shape[1], discretization, bidirectional=False,
                            with_d=not _is_none(inputs[5]), with_z=not _is_none(inputs[6]))


@torch.library.custom_op(COMPILED_SCAN_OP, mutates_args=())
def _compiled_scan_op(backend: str, u: list[torch.Tensor], delta: list[torch.Tensor], A: list[torch.Tensor],
                      B: list[torch.Tensor], C: list[torch.Tensor], D: list[torch.Tensor],
                      delta_bias: list[torch.Tensor], z: list[torch.Tensor], softplus: bool, method: str,
                      reverse: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The compiled backends' scan of one or two directions (``compiled.scan``) as one traceable op."""
    out, last = _ORIGINAL_COMPILED_SCAN[0](backend, u, delta, A, B, C, D, delta_bias, z, softplus, method,
                                           [bool(r) for r in reverse])
    return out, last


@_compiled_scan_op.register_fake
def _compiled_scan_op_fake(backend, u, delta, A, B, C, D, delta_bias, z, softplus, method, reverse):
    batch, dim, length = u[0].shape
    return (u[0].new_empty((len(u), batch, dim, length)),
            u[0].new_empty((len(u), batch, dim, A[0].shape[1]), dtype=torch.float32))


_ORIGINAL_COMPILED_SCAN = [None]


def _routed_compiled_scan(backend, u, delta, A, B, C, D, delta_bias, z, softplus, method, reverse, gap=None,
                          a_log=False):
    if gap is not None or a_log:  # (kernel-only options, taken outside a trace; gap_form's plain scan is counted)
        raise ValueError('FLOP counting: the scan was given in-kernel gaps or A_log under a trace.')
    return torch.ops.mmssm_analysis.compiled_selective_scan(backend, u, delta, A, B, C, D, delta_bias, z, softplus,
                                                            method, [int(r) for r in reverse])


def _list_length(value) -> int:
    """Number of elements of a traced list argument (a prim::ListConstruct node or a constant)."""
    node = value.node()
    if node.kind() == 'prim::ListConstruct':
        return len(list(node.inputs()))
    constant = value.toIValue()
    return 0 if constant is None else len(constant)


def compiled_scan_flop_jit(inputs: list, outputs: list) -> Counter:
    """MMEngine/fvcore op handle of ``mmssm_analysis::compiled_selective_scan`` (the compiled backends, one or two
    directions per call): :func:`count_scan_flops` per direction, under the same key as the torch path's scan.
    These backends always get a D (zeros when the caller gave none), so D is counted."""
    out_shape, last_shape = get_shape(outputs[0]), get_shape(outputs[1])
    if out_shape is None or last_shape is None:
        raise RuntimeError('compiled_scan_flop_jit: the trace has no shapes for the scan outputs.')
    directions, batch, dim, length = out_shape
    discretization = inputs[10].toIValue()
    flops = count_scan_flops(batch, dim, length, last_shape[-1], discretization, bidirectional=False,
                             with_d=True, with_z=_list_length(inputs[8]) > 0)
    return Counter({SCAN_OP_KEY: directions * flops})


def sdpa_flop_jit(inputs: list, outputs: list) -> int:
    """``aten::scaled_dot_product_attention``, which MMEngine 0.10.7 does not count: its two matrix products,
    batch x heads x L x S x (d_qk + d_v) multiply-adds."""
    query, value = get_shape(inputs[0]), get_shape(inputs[2])
    *batch, length, qk_dims = query
    source, v_dims = value[-2], value[-1]
    count = length * source * (qk_dims + v_dims)
    for size in batch:
        count *= size
    return count


def conv_mode_flop_jit(inputs: list, outputs: list) -> int:
    """``aten::_convolution_mode`` (a convolution with ``padding='same'|'valid'``, e.g. MambaVision's depthwise
    conv1d), which MMEngine 0.10.7 does not count: output elements x input channels per group x kernel size."""
    weight, out = get_shape(inputs[1]), get_shape(outputs[0])
    count = weight[1]  # input channels per group
    for size in weight[2:]:
        count *= size
    for size in out:
        count *= size
    return count


SCAN_HANDLES = {SCAN_OP: selective_scan_flop_jit, COMPILED_SCAN_OP: compiled_scan_flop_jit}
# ops of mmssm's models that MMEngine has no handle for; registered with the scan handles
EXTRA_HANDLES = {'aten::scaled_dot_product_attention': sdpa_flop_jit, 'aten::_convolution_mode': conv_mode_flop_jit}


@contextlib.contextmanager
def scan_flop_counting(register_handle: bool = True):
    """Inside this context every selective scan runs as the single op ``mmssm_analysis::selective_scan`` (the
    torch path) or ``mmssm_analysis::compiled_selective_scan`` (the Triton / CUDA backends), with the same results,
    so that a jit trace sees it; with ``register_handle`` MMEngine's default FLOP handles also count it, so
    ``FlopAnalyzer`` and ``get_model_complexity_info`` created inside include the scan.

    Not thread-safe (it swaps module attributes), and the op has no autograd: trace under ``torch.no_grad()``.
    """
    package = _scan_package
    saved_scan = package._selective_scan_torch
    saved_original = _ORIGINAL_SCAN[0]
    handles = _mmengine_complexity._DEFAULT_SUPPORTED_FLOP_OPS
    saved_handles = {op: handles[op] for op in {**SCAN_HANDLES, **EXTRA_HANDLES} if op in handles}
    if saved_scan is not _routed_scan:  # nested contexts keep the real implementation
        _ORIGINAL_SCAN[0] = saved_scan
    package._selective_scan_torch = _routed_scan
    saved_compiled, saved_compiled_original = _compiled_package.scan, _ORIGINAL_COMPILED_SCAN[0]
    if saved_compiled is not _routed_compiled_scan:
        _ORIGINAL_COMPILED_SCAN[0] = saved_compiled
    _compiled_package.scan = _routed_compiled_scan  # selective_scan imports it at each call
    if register_handle:
        handles.update(SCAN_HANDLES)
        handles.update(EXTRA_HANDLES)
    try:
        yield
    finally:
        package._selective_scan_torch = saved_scan
        _ORIGINAL_SCAN[0] = saved_original
        _compiled_package.scan = saved_compiled
        _ORIGINAL_COMPILED_SCAN[0] = saved_compiled_original
        for op in {**SCAN_HANDLES, **EXTRA_HANDLES}:
            if op in saved_handles:
                handles[op] = saved_handles[op]
            else:
                handles.pop(op, None)


@contextlib.contextmanager
def _no_scan_compile():
    """The scan's CPU kernels would be compiled with torch.compile for large chunks; a count needs one forward,
    which eager runs faster than a compile."""
    saved = os.environ.get('MMSSM_SCAN_COMPILE')
    os.environ['MMSSM_SCAN_COMPILE'] = '0'
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop('MMSSM_SCAN_COMPILE', None)
        else:
            os.environ['MMSSM_SCAN_COMPILE'] = saved


def analyze_flops(model: torch.nn.Module, inputs, count_scan: bool = True, quiet: bool = True) -> FlopAnalyzer:
    """Trace ``model(*inputs)`` once with the scan as one op and return MMEngine's ``FlopAnalyzer`` of it.

    With ``count_scan`` the analyzer has the scan handle: ``total()`` is the count of every other op (exactly what
    MMEngine counts without the handle) plus :func:`count_scan_flops` of every scan direction, and
    ``by_operator()['selective_scan']`` is the scan's part. With ``count_scan=False`` the scan op stays uncounted
    (listed in ``unsupported_ops()``). The trace is taken here, under ``torch.no_grad()``; the results are cached
    in the analyzer (changing its op handles afterwards would trace again, outside the context, without the
    scan). ``quiet`` silences MMEngine's warnings about uncounted (elementwise) ops, uncalled modules and tracing.
    """
    if not isinstance(inputs, tuple):
        inputs = (inputs,)
    analyzer = FlopAnalyzer(model, inputs)
    if quiet:
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings('none')
    analyzer.set_op_handle(**EXTRA_HANDLES)
    if count_scan:
        analyzer.set_op_handle(**SCAN_HANDLES)
    with scan_flop_counting(register_handle=False), _no_scan_compile(), torch.no_grad():
        analyzer.total()  # traces now, while the scan is one op
    routed = scan_flops(analyzer) > 0 or any(op in analyzer.unsupported_ops() for op in SCAN_HANDLES)
    mixers = [name for name, module in model.named_modules()
              if type(module).__name__ in ('MambaMixer', 'MambaVisionMixer')]
    if mixers and not routed:  # a scan path that bypasses both ops would go uncounted
        raise RuntimeError(f'analyze_flops: {mixers[0]} ran, but no selective scan reached the trace as '
                           f'{SCAN_OP} or {COMPILED_SCAN_OP}; mmssm.analysis.flops.scan_flop_counting no longer '
                           f'intercepts the scan.')
    return analyzer


def scan_flops(analyzer: FlopAnalyzer, module_name: str = '') -> int:
    """The selective scan's part of an :func:`analyze_flops` count (of one module, default the whole model)."""
    return int(analyzer.by_operator(module_name).get(SCAN_OP_KEY, 0))


# --------------------------------------------------------------------------- the tools' shared model setup
TASKS = dict(mmpretrain='classification', mmseg='segmentation', mmdet='detection')
DEFAULT_SHAPES = dict(classification=(224, 224), segmentation=(512, 512), detection=(800, 1333))


def build_model_from_cfg(cfg, device: str = 'cpu'):
    """The model of a classification / segmentation / detection config, in eval mode, as the task packages'
    analysis tools build it: through the task package's MODELS in its default scope, SyncBN reverted to BN, and
    for a segmentor without the auxiliary head (training only, as mmseg's get_flops). Weights stay at their
    construction-time initialization (no checkpoint is loaded). Returns (model, task)."""
    import importlib

    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope

    import mmssm  # noqa: F401
    import mmssm.engine  # noqa: F401
    import mmssm.models  # noqa: F401

    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise ValueError(f'cannot tell the task of this config: default_scope is {scope!r}; mmssm configs inherit '
                         f'a base of one of {sorted(TASKS)}, which sets it.')
    init_default_scope(scope)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    model_cfg = cfg.model.copy()
    if scope == 'mmpretrain' and cfg.get('data_preprocessor') is not None:  # as mmpretrain's Runner does
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    model = registry.build(model_cfg)
    model = revert_sync_batchnorm(model)
    if scope == 'mmseg' and getattr(model, 'auxiliary_head', None) is not None:
        model.auxiliary_head = None
    return model.to(device).eval(), TASKS[scope]


def default_shape(cfg, task: str) -> tuple:
    """(H, W) to count / benchmark when none is given: the backbone's img_size for a classifier, the config's
    crop_size for a segmentor, mmdet's usual 800 x 1333 for a detector."""
    def pair(value):
        return (value, value) if isinstance(value, int) else tuple(value)
    if task == 'classification' and cfg.model.get('backbone', {}).get('img_size'):
        return pair(cfg.model.backbone.img_size)
    if task == 'segmentation' and cfg.get('crop_size'):
        return pair(cfg.crop_size)
    return DEFAULT_SHAPES[task]


def prepare_dummy_input(model, task: str, shape, batch_size: int = 1, device: str = 'cpu', seed: int = 0):
    """A random image batch of ``shape`` (H, W) through the model's data preprocessor (which pads a detector's
    input to its size divisor, as in mmdet's get_flops); returns the (batch, 3, H', W') input tensor.

    Like mmdet's get_flops, this binds ``model.forward`` (on the instance) to the batch's data samples in 'tensor'
    mode, so that ``model(inputs)`` runs the network without post-processing: a classifier's backbone, neck and
    head; a segmentor's ``_forward`` (backbone, neck, decode head); a detector's ``_forward`` (backbone, neck,
    RPN and RoI heads)."""
    height, width = shape
    generator = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, height, width, generator=generator) * 255 for _ in range(batch_size)]
    samples = None
    if task == 'segmentation':
        from mmseg.structures import SegDataSample
        samples = [SegDataSample(metainfo=dict(ori_shape=(height, width), img_shape=(height, width),
                                               pad_shape=(height, width))) for _ in range(batch_size)]
    elif task == 'detection':
        from mmdet.structures import DetDataSample
        samples = [DetDataSample(metainfo=dict(ori_shape=(height, width), img_shape=(height, width),
                                               pad_shape=(height, width), scale_factor=(1.0, 1.0)))
                   for _ in range(batch_size)]
    data = dict(inputs=[image.to(device) for image in images])
    if samples is not None:
        data['data_samples'] = samples
    with torch.no_grad():
        data = model.data_preprocessor(data, False)
    model.forward = functools.partial(type(model).forward, model, data_samples=data.get('data_samples'),
                                      mode='tensor')
    return data['inputs']
