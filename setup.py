"""Install mmssm.

A plain ``pip install -e .`` needs no CUDA toolchain. ``MMSSM_BUILD_CUDA=1`` also compiles the selective-scan
kernels in ``csrc/`` into ``mmssm._C`` (``MMSSM_CUDA_ARCH_LIST``, default ``8.0;9.0``, picks the GPU
architectures; ``MAX_JOBS`` the parallel nvcc jobs); it needs torch importable at build time, so use
``pip install --no-build-isolation -e .``.
"""
import os
import os.path as osp
from glob import glob

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_version() -> str:
    scope: dict = {}
    with open(osp.join(HERE, 'mmssm', 'version.py'), encoding='utf-8') as f:
        exec(compile(f.read(), 'version.py', 'exec'), scope)
    return scope['__version__']


def parse_requirements(name: str) -> list:
    """Read requirements/<name>.txt, skipping comments and blank lines."""
    requirements = []
    with open(osp.join(HERE, 'requirements', name), encoding='utf-8') as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line:
                requirements.append(line)
    return requirements


def cuda_extensions() -> tuple:
    """The csrc/ extension when MMSSM_BUILD_CUDA=1, else nothing."""
    if os.environ.get('MMSSM_BUILD_CUDA', '0') != '1':
        return [], {}
    sources = sorted(glob(osp.join('csrc', 'selective_scan', '*.cpp')) +
                     glob(osp.join('csrc', 'selective_scan', '*.cu')))
    if not sources:
        raise RuntimeError(
            'MMSSM_BUILD_CUDA=1 was set, but csrc/selective_scan/ holds no kernel sources yet; '
            'install without MMSSM_BUILD_CUDA (the torch backend needs no build).')
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension
    arch_list = os.environ.get('MMSSM_CUDA_ARCH_LIST', '8.0;9.0')
    os.environ['TORCH_CUDA_ARCH_LIST'] = arch_list
    extension = CUDAExtension(
        name='mmssm._C',
        sources=sources,
        include_dirs=[osp.join(HERE, 'csrc', 'selective_scan')],
        extra_compile_args={'cxx': ['-O3', '-std=c++17'],
                            'nvcc': ['-O3', '-std=c++17', '--use_fast_math', '-lineinfo',
                                     f'--threads={os.environ.get("NVCC_THREADS", "4")}']})
    return [extension], {'build_ext': BuildExtension}


ext_modules, cmdclass = cuda_extensions()

setup(
    name='mmssm',
    version=read_version(),
    description='OpenMMLab plugin for state-space-model vision backbones (Vision Mamba, MambaVision, ...)',
    long_description=open(osp.join(HERE, 'README.md'), encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache License 2.0',
    packages=find_packages(exclude=('configs', 'tools', 'tests', 'benchmarks', 'docs')),
    include_package_data=True,
    python_requires='>=3.10',
    install_requires=parse_requirements('runtime.txt'),
    extras_require={
        'cuda': parse_requirements('optional.txt'),
        'tests': parse_requirements('tests.txt'),
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
