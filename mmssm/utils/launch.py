"""What tools/train.py and tools/test.py do to a config before MMEngine's Runner takes it: strict
``--cfg-options``, a check that the dataset is where the config says, and the settings for AMP, resuming,
weights-only checkpoints and CPU multi-process runs."""
import difflib
import os
import os.path as osp

from mmengine.config import Config, ConfigDict

TASK_OF_SCOPE = dict(mmpretrain='classification', mmseg='segmentation', mmdet='detection')
# top-level config variables that earlier mmssm configs read and that nothing reads now -> what replaces them
RETIRED_KEYS = {'vim_checkpoint': 'model.backbone.init_cfg.checkpoint'}
DEMO_HINT = ('To see the whole pipeline without the dataset, run the demo instead: `make demo`, or generate the '
             'demo data with `python tools/misc/make_demo_data.py` and train a config from configs/*/*_demo.py.')


def _keys(cfg, prefix=''):
    for key, value in cfg.items():
        yield prefix + key
        if isinstance(value, dict):
            yield from _keys(value, f'{prefix}{key}.')


def check_cfg_options(cfg: Config, options: dict | None) -> None:
    """Refuse a ``--cfg-options`` key that names nothing in the config (a typo would otherwise add a key that
    nothing reads). A key below a list index (``a.0.b``) or below a key that is set to None is allowed."""
    if not options:
        return
    known = set(_keys(cfg._cfg_dict.to_dict()))
    for key in options:
        if key in RETIRED_KEYS and key not in known:
            raise ValueError(f'--cfg-options: {key} is no longer read by mmssm configs; set '
                             f'{RETIRED_KEYS[key]}=... instead.')
        parts = key.split('.')
        if key in known or any(part.isdigit() for part in parts):
            continue
        parent = '.'.join(parts[:-1])
        parent_value = cfg
        try:
            for part in parts[:-1]:
                parent_value = parent_value[part]
        except (KeyError, TypeError):
            parent_value = 'missing'
        if parent and parent_value is None:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=3)
        hint = f' Did you mean {", ".join(repr(c) for c in close)}?' if close else ''
        raise ValueError(f'--cfg-options: the config has no key {key!r}.{hint} To add a new key, edit the config '
                         f'file instead.')


def load_config(path: str, options: dict | None = None) -> Config:
    """The config at ``path`` with ``--cfg-options`` merged in (refused if a key names nothing in it)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file {path!r} does not exist; the configs are in configs/cls, '
                                f'configs/seg and configs/det.')
    cfg = Config.fromfile(path)
    for key, replacement in RETIRED_KEYS.items():
        if key in cfg:  # e.g. a child config written for an older mmssm: it would be silently ignored
            raise ValueError(f'{path} sets {key}, which mmssm configs no longer read (so it would do nothing); set '
                             f'{replacement} instead, e.g. model = dict(backbone=dict(init_cfg=dict('
                             f'checkpoint=...))) in the config.')
    check_cfg_options(cfg, options)
    if options:
        cfg.merge_from_dict(options)
    return cfg


def _dataset_cfgs(dataset):
    if dataset is None:
        return []
    if isinstance(dataset, (list, tuple)):
        return [d for item in dataset for d in _dataset_cfgs(item)]
    found = []
    for key in ('dataset', 'datasets'):
        if key in dataset:
            found += _dataset_cfgs(dataset[key])
    return found or [dataset]


def missing_dataset_paths(cfg: Config, split: str = 'train') -> list:
    """Paths that the ``<split>_dataloader``'s dataset needs (data_root, ann_file, data_prefix folders) and that do
    not exist."""
    loader = cfg.get(f'{split}_dataloader')
    if not loader:
        return []
    missing = []
    for dataset in _dataset_cfgs(loader.get('dataset')):
        root = dataset.get('data_root', '') or ''
        paths = [root] if root else []
        if dataset.get('ann_file'):
            paths.append(osp.join(root, dataset['ann_file']))
        prefix = dataset.get('data_prefix') or {}
        if isinstance(prefix, str):
            prefix = dict(img_path=prefix)
        paths += [osp.join(root, p) for p in prefix.values() if isinstance(p, str) and p]
        missing += [p for p in paths if p and '://' not in p and not osp.exists(p)]
    return sorted(set(missing))


def check_dataset(cfg: Config, split: str = 'train') -> None:
    """Stop at once, naming the expected place, when a config's data is not on disk."""
    missing = missing_dataset_paths(cfg, split)
    if missing:
        dataset = cfg[f'{split}_dataloader'].dataset
        name = dataset.get('type', 'the dataset')
        raise FileNotFoundError(
            f'The {split} data of this config ({name}) is not where the config expects it; missing: '
            f'{", ".join(missing)}. Put the dataset there (or pass --cfg-options {split}_dataloader.dataset.data_root='
            f'<path>). {DEMO_HINT}')


def task_of(cfg: Config) -> str:
    scope = cfg.get('default_scope')
    if scope not in TASK_OF_SCOPE:
        raise ValueError(f'cannot tell the task of this config: default_scope is {scope!r}; mmssm configs inherit '
                         f'a base of one of {sorted(TASK_OF_SCOPE)}, which sets it.')
    return TASK_OF_SCOPE[scope]


def add_weights_only_hook(cfg: Config) -> None:
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(str(h.get('type', '')).endswith('WeightsOnlyCheckpointHook') for h in hooks):
        hooks.append(ConfigDict(type='mmssm.WeightsOnlyCheckpointHook'))
    cfg.custom_hooks = hooks


def setup_cpu_distributed(cfg: Config, launcher: str) -> None:
    """MMEngine's pytorch launcher assumes CUDA (NCCL, ``torch.cuda.set_device``): without a GPU, start the
    process group with gloo here and wrap the model in DDP without device ids."""
    import torch
    import torch.distributed as dist
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher != 'pytorch':
        raise ValueError(f'without a GPU only --launcher pytorch (torchrun, tools/dist_train.sh) is supported, got '
                         f'{launcher!r}.')
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']),
                                world_size=int(os.environ['WORLD_SIZE']))
    cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
                                 find_unused_parameters=cfg.get('find_unused_parameters', False))


def enable_cuda_graph(cfg: Config, amp: bool, launcher: str) -> None:
    """--cuda-graph: mmssm.CUDAGraphTrainHook in the custom hooks (bf16 autocast with --amp)."""
    import torch
    if not torch.cuda.is_available():
        raise ValueError('--cuda-graph needs a CUDA GPU; run without it on a CPU.')
    if launcher != 'none':
        raise ValueError(f'--cuda-graph trains in one process; drop it or --launcher {launcher}.')
    optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if optim_wrapper != 'OptimWrapper':
        raise ValueError(f'--cuda-graph needs an OptimWrapper config, this one uses {optim_wrapper!r} (with --amp '
                         f'it adds bf16 autocast itself).')
    hooks = list(cfg.get('custom_hooks') or [])
    hooks.append(dict(type='mmssm.CUDAGraphTrainHook', autocast='bfloat16' if amp else None))
    cfg.custom_hooks = hooks


def enable_amp(cfg: Config) -> None:
    import torch
    if not torch.cuda.is_available():
        raise ValueError('--amp needs a CUDA GPU (MMEngine\'s AmpOptimWrapper); run without --amp on a CPU.')
    optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if optim_wrapper == 'AmpOptimWrapper':
        return
    if optim_wrapper != 'OptimWrapper':
        raise ValueError(f'--amp works with OptimWrapper configs, this one uses {optim_wrapper!r}.')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
