"""mmssm's registries: children of MMEngine's root registries, so that configs of MMPretrain, MMSegmentation
and MMDetection reach mmssm types as ``type='mmssm.<Name>'`` once they import ``mmssm.models`` through
``custom_imports``. ``locations`` make a registry import the modules that fill it on first look-up."""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmssm', locations=['mmssm.models'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='mmssm', locations=['mmssm.engine'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor', parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS, scope='mmssm',
    locations=['mmssm.engine'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, scope='mmssm', locations=['mmssm.datasets'])
