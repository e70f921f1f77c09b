"""Install mmssm.

A plain ``pip install -e .`` needs no CUDA toolchain. ``MMSSM_BUILD_CUDA=1`` also compiles the selective-scan
kernels in ``csrc/`` into ``mmssm._C`` (``MMSSM_CUDA_ARCH_LIST``, default ``8.0;9.0``, picks the GPU
architectures; ``MAX_JOBS`` the parallel nvcc jobs); it needs torch importable at build time, so use
``pip install --no-build-isolation -e .``.
"""
import atexit
import base64
import hashlib
import json
import os
import os.path as osp
import shutil
import sys
import zipfile
from glob import glob

from setuptools import find_packages, setup

try:  # setuptools >= 64: what pip runs for `pip install -e .` (PEP 660)
    from setuptools.command.editable_wheel import editable_wheel
except ImportError:  # older setuptools: pip runs `setup.py develop`, whose install mim finds in the checkout
    editable_wheel = None

HERE = osp.dirname(osp.abspath(__file__))
# What mim (`mim train/test/search mmssm ...`) looks for in <package folder>/.mim, as in OpenMMLab's packages.
MIM_ITEMS = ('configs', 'tools', 'model-index.yml')
MIM_DIR = osp.join(HERE, 'mmssm', '.mim')


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


def _remove(path: str) -> None:
    if osp.islink(path) or osp.isfile(path):
        os.remove(path)
    elif osp.isdir(path):
        shutil.rmtree(path)


def add_mim_extension(copy: bool) -> None:
    """Fill mmssm/.mim with the checkout's configs, tools and model-index.yml: symlinks, or copies with copy=True.

    An item that the source tree lacks (a build from an sdist without it) leaves what .mim holds.
    """
    os.makedirs(MIM_DIR, exist_ok=True)
    for item in MIM_ITEMS:
        source, target = osp.join(HERE, item), osp.join(MIM_DIR, item)
        if not osp.exists(source):
            continue
        if copy:
            _remove(target)
            if osp.isdir(source):
                shutil.copytree(source, target, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
            else:
                shutil.copyfile(source, target)
        else:
            link = osp.relpath(source, MIM_DIR)
            if osp.islink(target) and os.readlink(target) == link:
                continue  # already right: left alone, so that a concurrent reader never finds it missing
            _remove(target)
            os.symlink(link, target)


def mim_extension() -> None:
    """OpenMMLab's `add_mim_extension()` convention, run for every setup.py command.

    OpenMMLab's setup.py files link .mim only for `develop`, but `pip install -e .` runs `editable_wheel` now
    (PEP 660), and setuptools >= 80 turns `setup.py develop` itself into that. So the checkout's mmssm/.mim always
    holds symlinks, except while a wheel or an sdist is built from it: then copies (the distribution ships them:
    package_data below, MANIFEST.in), turned back into symlinks when the build is over. Windows always copies.
    """
    building = any(command in sys.argv for command in ('sdist', 'bdist_wheel'))
    if os.name == 'nt':
        add_mim_extension(copy=True)
        return
    add_mim_extension(copy=building)
    if building:
        atexit.register(add_mim_extension, copy=False)


# mmssm installed in editable mode, seen from mim (0.3.9): mim takes a package's folder to be
# <folder of its dist-info>/<name>, which for a PEP 660 editable install is site-packages/mmssm, a folder that does
# not exist: the package stays in the checkout, so mim finds neither tools/train.py nor the configs there. The
# editable wheel therefore also installs site-packages/mmssm/.mim, holding launchers of the checkout's files, not
# copies, so that edits show at once: tools/**/*.py run the checkout's script, configs/**/*.py inherit the
# checkout's config (``_base_``), model-index.yml imports the checkout's. A file added to configs/ or tools/ reaches
# that folder at the next `pip install -e .`; the checkout's own mmssm/.mim (symlinks) always has it.
TOOL_LAUNCHER = """# mmssm is installed in editable mode: this runs the checkout's {name} (mim looks for it here).
import os.path as osp
import runpy
import sys

script = {path!r}
sys.argv[0] = script
sys.path[0] = osp.dirname(script)
runpy.run_path(script, run_name='__main__')
"""


def mim_launchers() -> dict:
    """What the editable wheel adds under site-packages/mmssm/.mim: {name in the wheel: text}."""
    files = {}
    for item in ('tools', 'configs'):
        for path in sorted(glob(osp.join(HERE, item, '**', '*.py'), recursive=True)):
            name = osp.relpath(path, HERE).replace(os.sep, '/')
            if item == 'tools':
                text = TOOL_LAUNCHER.format(name=name, path=path)
            else:
                text = f"# mmssm is installed in editable mode: this is the checkout's {name}.\n_base_ = {path!r}\n"
            files[f'mmssm/.mim/{name}'] = text
    # A file of the folder itself, also so that `pip uninstall` removes the folder (it leaves a folder that holds
    # only subfolders), which would otherwise stay as an empty namespace package.
    files['mmssm/EDITABLE.txt'] = (
        f'mmssm is installed in editable mode from {HERE}. This folder holds only .mim, where mim looks for\n'
        "mmssm's tools, configs and model index (`mim train/test/search mmssm ...`).\n")
    index = osp.join(HERE, 'model-index.yml')
    if osp.exists(index):
        files['mmssm/.mim/model-index.yml'] = (
            "# mmssm is installed in editable mode: this is the checkout's model-index.yml.\n"
            f'Import:\n  - {json.dumps(index)}\n')
    return files


def add_to_wheel(wheel_path: str, files: dict) -> None:
    """Add text files to a built wheel, with their lines in its RECORD (sha256, urlsafe base64, size)."""
    with zipfile.ZipFile(wheel_path) as wheel:
        entries = [(info, wheel.read(info)) for info in wheel.infolist()]
    record = next(info.filename for info, _ in entries if info.filename.endswith('.dist-info/RECORD'))
    rows = []
    with zipfile.ZipFile(wheel_path + '.part', 'w', zipfile.ZIP_DEFLATED) as out:
        for info, data in entries:
            if info.filename == record:
                rows.append(data.decode().rstrip('\n'))
            else:
                out.writestr(info, data)
        for name, text in files.items():
            data = text.encode()
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            out.writestr(info, data, zipfile.ZIP_DEFLATED)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()
            rows.append(f'{name},sha256={digest},{len(data)}')
        out.writestr(record, '\n'.join(rows) + '\n')
    os.replace(wheel_path + '.part', wheel_path)


cmdclass = {}
if editable_wheel is not None:

    class EditableWheel(editable_wheel):
        """`pip install -e .`: setuptools' editable wheel plus site-packages/mmssm/.mim (see mim_launchers)."""

        def run(self):
            super().run()
            built = glob(osp.join(str(self.dist_dir), '*editable*.whl'))
            add_to_wheel(max(built, key=osp.getmtime), mim_launchers())

    cmdclass['editable_wheel'] = EditableWheel


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
        # no -std flag: torch's BuildExtension picks the C++ standard its headers were built with (C++20 in
        # torch >= 2.10); compiling against them as C++17 breaks the layout of c10 types (a crash on the first error
        # that the binding raises)
        extra_compile_args={'cxx': ['-O3'],
                            'nvcc': ['-O3', '--use_fast_math', '-lineinfo',
                                     f'--threads={os.environ.get("NVCC_THREADS", "4")}']})
    return [extension], {'build_ext': BuildExtension}


mim_extension()
ext_modules, ext_cmdclass = cuda_extensions()
cmdclass.update(ext_cmdclass)

setup(
    name='mmssm',
    version=read_version(),
    description='OpenMMLab plugin for state-space-model vision backbones (Vision Mamba, MambaVision, ...)',
    long_description=open(osp.join(HERE, 'README.md'), encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache License 2.0',
    packages=find_packages(exclude=('configs', 'tools', 'tests', 'benchmarks', 'docs')),
    # The packages are at the root of the checkout: said explicitly, setuptools makes an editable install a path
    # entry for the checkout (as `setup.py develop` did) instead of an import finder. With the finder, the
    # site-packages/mmssm folder that holds only .mim (see mim_launchers) would hide the package: Python's path
    # finder, which runs first, takes it for a namespace package. On the path, the checkout's mmssm (a regular
    # package) wins over it.
    package_dir={'': '.'},
    # With the package folder spelt './mmssm', include_package_data no longer matches MANIFEST.in's lines to the
    # package, so package data is listed here (the sdist still follows MANIFEST.in).
    include_package_data=True,
    package_data={'mmssm': ['.mim/model-index.yml', '.mim/configs/**/*.py', '.mim/configs/**/*.yml',
                            '.mim/tools/**/*.py', '.mim/tools/**/*.sh']},
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
