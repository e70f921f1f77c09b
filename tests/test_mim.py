"""mim support: the model index (model-index.yml and configs/*/metafile.yml) against the configs, the .mim folder
that the install fills, and `mim train mmssm` / `mim test mmssm` end to end on CPU with a tiny copy of the Vim-T
classification config, run from outside the checkout as a user of the installed package would."""
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest
import yaml

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'tests', 'data', 'configs', 'tiny_cls_train.py')
TASK_FOLDERS = ('cls', 'seg', 'det')
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')


def load_yaml(path):
    with open(path, encoding='utf-8') as f:
        return yaml.safe_load(f)


def metafile(folder):
    return load_yaml(osp.join(ROOT, 'configs', folder, 'metafile.yml'))


def is_string_list(value):
    return isinstance(value, list) and value and all(isinstance(item, str) and item for item in value)


# ---- the model index --------------------------------------------------------------------------------------------


def test_model_index_imports_one_metafile_per_task_folder():
    index = load_yaml(osp.join(ROOT, 'model-index.yml'))
    assert index['Import'] == [f'configs/{folder}/metafile.yml' for folder in TASK_FOLDERS]


@pytest.mark.parametrize('folder', TASK_FOLDERS)
def test_metafile_lists_every_config_of_its_folder_and_nothing_else(folder):
    meta = metafile(folder)
    listed = [model['Config'] for model in meta['Models']]
    # the configs at the top of the folder, and those of every subfolder with a listed config (a method's
    # subfolder, e.g. token_pruning/, is listed whole once it is listed at all)
    subfolders = {osp.dirname(path) for path in listed} - {f'configs/{folder}'}
    configs = sorted(f'{where}/{name}' for where in [f'configs/{folder}', *sorted(subfolders)]
                     if osp.isdir(osp.join(ROOT, where))
                     for name in os.listdir(osp.join(ROOT, where)) if name.endswith('.py'))
    assert len(listed) == len(set(listed)), f'a config is listed twice in configs/{folder}/metafile.yml'
    assert not set(configs) - set(listed), f'configs missing from configs/{folder}/metafile.yml'
    assert not set(listed) - set(configs), f'configs/{folder}/metafile.yml lists configs that do not exist'


@pytest.mark.parametrize('folder', TASK_FOLDERS)
def test_metafile_entries_are_complete_and_claim_no_numbers(folder):
    meta = metafile(folder)
    collections = {collection['Name'] for collection in meta['Collections']}
    for model in meta['Models']:
        name = model['Name']
        assert name == osp.splitext(osp.basename(model['Config']))[0], name
        assert osp.isfile(osp.join(ROOT, model['Config'])), name
        assert model['In Collection'] in collections, name
        metadata = model['Metadata']
        task = metadata['Task']
        assert isinstance(task, str) and task or is_string_list(task), name
        assert isinstance(metadata['Training Data'], str) and metadata['Training Data'], name
        assert is_string_list(metadata['Architecture']), name
        assert model['Results'], name
        for result in model['Results']:
            assert isinstance(result['Task'], str) and result['Task'], name
            assert isinstance(result['Dataset'], str) and result['Dataset'], name
            # a metric only where a number was measured (none yet): every value present must be a number
            assert all(isinstance(value, (int, float)) for value in (result.get('Metrics') or {}).values()), name
        weights = model.get('Weights')
        assert weights is None or isinstance(weights, str) and weights.startswith(('http://', 'https://')), name


def test_model_names_are_unique_and_the_index_loads_cleanly():
    names = [model['Name'] for folder in TASK_FOLDERS for model in metafile(folder)['Models']]
    assert len(names) == len(set(names))
    modelindex = pytest.importorskip('modelindex')  # installed with openmim: what `mim search` reads
    index = modelindex.load(osp.join(ROOT, 'model-index.yml'))
    assert index.check(silent=True) == []
    assert sorted(model.name for model in index.models) == sorted(names)


# ---- the install and mim ----------------------------------------------------------------------------------------

# the venv's own mim: it runs the tools with the interpreter it was installed with
MIM = shutil.which('mim', path=osp.dirname(sys.executable))
needs_mim = pytest.mark.skipif(MIM is None, reason=f'no mim next to {sys.executable}: pip install openmim '
                                                   '(requirements/tests.txt)')


def run(command, cwd, timeout=300):
    # stdin closed: mim asks on stdin before installing a package it does not find, and must never get that far
    return subprocess.run(command, cwd=cwd, env=ENV, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def output(result):
    return result.stdout[-4000:] + result.stderr[-4000:]


@needs_mim
def test_install_fills_mmssm_mim(tmp_path):
    # from outside the checkout, so that only the installed package is importable
    result = run([sys.executable, '-c', 'import mmssm, mim.utils; print("module:", mmssm.__file__); '
                  'print("mim:", mim.utils.get_installed_path("mmssm"))'], cwd=tmp_path, timeout=120)
    assert result.returncode == 0, output(result)
    found = dict(line.split(': ', 1) for line in result.stdout.splitlines() if line.startswith(('module: ', 'mim: ')))
    module_file, package_root = found['module'], found['mim']
    assert module_file != 'None', 'mmssm imports as a namespace package: site-packages/mmssm hides it'
    if osp.dirname(module_file) == osp.join(ROOT, 'mmssm'):
        # an editable install: the checkout's mmssm/.mim links the checkout's folders (OpenMMLab's convention)
        for item in ('configs', 'tools', 'model-index.yml'):
            assert osp.exists(osp.join(ROOT, 'mmssm', '.mim', item)), item
        assert osp.isfile(osp.join(ROOT, 'mmssm', '.mim', 'tools', 'train.py'))
    # where mim looks: <folder of the dist-info>/mmssm, site-packages/mmssm even for an editable install
    assert osp.isdir(osp.join(package_root, '.mim', 'configs')), package_root
    for tool in ('train.py', 'test.py'):
        assert osp.isfile(osp.join(package_root, '.mim', 'tools', tool)), (package_root, tool)
    assert osp.isfile(osp.join(package_root, '.mim', 'model-index.yml')), package_root


@needs_mim
def test_mim_search_reads_the_model_index(tmp_path):
    result = run([MIM, 'search', 'mmssm', '--valid-config'], cwd=tmp_path, timeout=120)
    assert result.returncode == 0, output(result)
    for folder in TASK_FOLDERS:
        for model in metafile(folder)['Models']:
            assert model['Name'] in result.stdout, model['Name']


@pytest.fixture(scope='module')
def mim_train(tmp_path_factory, data_root):
    work_dir = tmp_path_factory.mktemp('mim_train')
    result = run([MIM, 'train', 'mmssm', CONFIG, '--work-dir', str(work_dir), '--cfg-options',
                  f'train_dataloader.dataset.data_root={data_root}',
                  f'test_dataloader.dataset.data_root={data_root}', 'train_cfg.max_epochs=1'], cwd=work_dir)
    return work_dir, result


@needs_mim
def test_mim_train_runs_the_package_train_tool(mim_train):
    work_dir, result = mim_train
    assert result.returncode == 0, output(result)
    # mim runs <package folder>/.mim/tools/train.py with the config given by path
    assert osp.join('.mim', 'tools', 'train.py') in result.stdout, output(result)
    assert osp.isfile(work_dir / 'epoch_1.pth'), os.listdir(work_dir)


@needs_mim
def test_mim_test_evaluates_the_checkpoint(mim_train, data_root, tmp_path):
    work_dir, train_result = mim_train
    assert train_result.returncode == 0, output(train_result)
    result = run([MIM, 'test', 'mmssm', CONFIG, '--checkpoint', str(work_dir / 'epoch_1.pth'),
                  '--work-dir', str(tmp_path), '--cfg-options', f'test_dataloader.dataset.data_root={data_root}',
                  f'train_dataloader.dataset.data_root={data_root}'], cwd=tmp_path)
    assert result.returncode == 0, output(result)
    assert osp.join('.mim', 'tools', 'test.py') in result.stdout, output(result)
    assert 'accuracy/top1' in result.stdout + result.stderr, output(result)
