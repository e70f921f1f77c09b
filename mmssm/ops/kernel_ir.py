"""The Triton scan kernels compiled for a GPU architecture without a GPU (Triton compiles to PTX on any machine),
and what their PTX does per program: warp shuffles, block barriers, shared-memory accesses, exponentials. A check
of a kernel's register layout that runs on a CPU: the sums over the states must stay inside each thread.

    python -m mmssm.ops.kernel_ir            # both scan kernels at a few launch constants
    python -m mmssm.ops.kernel_ir --sass     # and each loop's SASS per iteration (needs Triton's nvdisasm)
"""
import argparse
import collections
import os
import re
import subprocess
import tempfile

# bf16 activations, float32 parameters and buffers (as a bf16 Vim calls them)
_BF16 = {'u_ptr', 'delta_ptr', 'z_ptr', 'B_ptr', 'C_ptr', 'out_ptr', 'dout_ptr', 'du_ptr', 'ddelta_ptr', 'dz_ptr'}
_SCAN_CONSTANTS = dict(N=16, N_PAD=16, CKPT_L=32, METHOD=0, K=0, HAS_Z=True, SOFTPLUS=True, SAVE=False, PHASE=0,
                       GAP=False, A_LOG=False, HAS_DLAST=False, BC_PARTIAL=True)


# the unit strides of the mixers' channels-last activations, which Triton specializes at run time (ints equal to 1)
CHANNELS_LAST_ONES = ('x_sd', 'z_sd', 'bc_sn', 'g_sd')


def compile_kernel(kernel, constants: dict, num_warps: int, arch: int = 90, ones=CHANNELS_LAST_ONES):
    """``kernel`` (a @triton.jit function) compiled for sm_``arch`` with ``constants`` as its constexprs, the
    ``ones`` arguments equal to 1 and the other ints int32, pointer arguments typed as in a bf16 model and 16-byte
    aligned (as Triton specializes them at run time). Returns Triton's CompiledKernel."""
    import inspect

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    kernel = getattr(kernel, 'jit', kernel)  # the jit function under mmssm.ops.launch.fast_launch
    names = kernel.arg_names
    constants = {name: value for name, value in constants.items() if name in names}
    for param in kernel.params:  # the constexprs not given take their defaults
        if param.is_constexpr and param.name not in constants and param.default is not inspect.Parameter.empty:
            constants[param.name] = param.default
    constants.update({name: 1 for name in ones if name in names and name not in kernel.do_not_specialize})
    signature = {name: 'constexpr' if name in constants else
                 ('*bf16' if name in _BF16 else '*fp32') if name.endswith('_ptr') else 'i32' for name in names}
    aligned = {(i,): [['tt.divisibility', 16]] for i, name in enumerate(names) if name.endswith('_ptr')}
    source = ASTSource(kernel, signature, constexprs={(names.index(n),): v for n, v in constants.items()},
                       attrs=aligned)
    return triton.compile(source, target=GPUTarget('cuda', arch, 32), options=dict(num_warps=num_warps))


def ptx_counts(ptx: str) -> dict:
    """Instructions of interest in a PTX listing (static counts: a loop's body counts once)."""
    body = [line.strip() for line in ptx.splitlines()]
    instructions = [line for line in body if line and line[0] not in '/.$}{' and line.endswith(';')]
    return {'instructions': len(instructions), 'shuffles': ptx.count('shfl.sync'), 'barriers': ptx.count('bar.sync'),
            'shared': ptx.count('ld.shared') + ptx.count('st.shared'), 'exp2': ptx.count('ex2.approx')}


def scan_kernel_counts(which: str, block_d: int, num_warps: int, **constants) -> dict:
    """ptx_counts of the Triton scan's forward (``which='fwd'``) or backward kernel at BLOCK_D / num_warps,
    zoh, 16 states, with a gate and softplus unless ``constants`` say otherwise."""
    from mmssm.ops.selective_scan import triton_scan
    kernel = triton_scan._scan_fwd_seq_kernel if which == 'fwd' else triton_scan._scan_bwd_seq_kernel
    compiled = compile_kernel(kernel, {**_SCAN_CONSTANTS, 'BLOCK_D': block_d, **constants}, num_warps)
    return ptx_counts(compiled.asm['ptx'])


def _nvdisasm() -> str:
    """The nvdisasm that ships with Triton's NVIDIA backend."""
    import triton.backends.nvidia
    path = os.path.join(os.path.dirname(triton.backends.nvidia.__file__), 'bin', 'nvdisasm')
    if not os.path.exists(path):
        raise FileNotFoundError(f'no nvdisasm at {path} (it comes with the triton wheel for Linux x86-64)')
    return path


def sass_loops(cubin: bytes) -> list:
    """The loops of a kernel's SASS (a branch back to an earlier label), innermost first: per loop, its
    instruction count per iteration and a Counter of its opcodes (without modifiers or predicates)."""
    with tempfile.NamedTemporaryFile(suffix='.cubin') as f:
        f.write(cubin)
        f.flush()
        listing = subprocess.run([_nvdisasm(), '-c', f.name], capture_output=True, text=True, check=True).stdout
    labels, code = {}, []  # label -> index of its first instruction; code: opcodes in order
    for line in listing.splitlines():
        label = re.match(r'^(\.L\w+):', line)
        if label:
            labels[label.group(1)] = len(code)
            continue
        match = re.match(r'\s+/\*[0-9a-f]{4}\*/\s+(@!?U?P\w+\s+)?([A-Z0-9_]+)[^;]*;', line)
        if match:
            code.append((match.group(2), re.search(r'`\((\.L\w+)\)', line)))
    loops = []
    for end, (opcode, target) in enumerate(code):
        if opcode == 'BRA' and target and labels.get(target.group(1), end) < end:  # (not the final self-jump)
            body = [op for op, _ in code[labels[target.group(1)]:end + 1]]
            loops.append(dict(instructions=len(body), opcodes=collections.Counter(body)))
    return sorted(loops, key=lambda loop: loop['instructions'])


def scan_kernel_sass(which: str, block_d: int, num_warps: int, **constants) -> list:
    """sass_loops of the Triton scan's forward or backward kernel (as :func:`scan_kernel_counts` compiles it)."""
    from mmssm.ops.selective_scan import triton_scan
    kernel = triton_scan._scan_fwd_seq_kernel if which == 'fwd' else triton_scan._scan_bwd_seq_kernel
    compiled = compile_kernel(kernel, {**_SCAN_CONSTANTS, 'BLOCK_D': block_d, **constants}, num_warps)
    return sass_loops(compiled.asm['cubin'])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--configs', nargs='+', default=['fwd,64,1', 'fwd,32,1', 'bwd,64,2', 'bwd,32,1',
                                                          'bwd,16,1', 'bwd,8,1'],
                        help='kernel,BLOCK_D,warps')
    parser.add_argument('--sass', action='store_true', help="also each loop's SASS opcodes per iteration")
    args = parser.parse_args()
    for config in args.configs:
        which, block_d, warps = config.split(',')
        counts = scan_kernel_counts(which, int(block_d), int(warps))
        print(f'{which} BLOCK_D {block_d:>3s} warps {warps}: ' + ', '.join(f'{k} {v}' for k, v in counts.items()))
        if args.sass:
            for loop in scan_kernel_sass(which, int(block_d), int(warps)):
                top = ', '.join(f'{op} {n}' for op, n in loop['opcodes'].most_common(10))
                print(f'    loop of {loop["instructions"]} SASS instructions: {top}')


if __name__ == '__main__':
    main()
