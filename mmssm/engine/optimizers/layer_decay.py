from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn

from mmssm.registry import OPTIM_WRAPPER_CONSTRUCTORS


def _find_backbone(model: nn.Module):
    model = getattr(model, 'module', model)  # DDP / MMDistributedDataParallel
    backbone = getattr(model, 'backbone', None)
    if backbone is not None and hasattr(backbone, 'get_layer_depth'):
        return backbone, 'backbone.'
    if hasattr(model, 'get_layer_depth'):
        return model, ''
    raise ValueError(
        f'LayerDecayOptimWrapperConstructor: {type(model).__name__} has no backbone with a get_layer_depth method '
        f'(mmssm.Vim has one); use the default constructor or a backbone that defines it.')


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Layer-wise learning-rate decay for any model whose backbone defines ``get_layer_depth(name, prefix)``:
    a classifier, a segmentor or a detector alike.

    A parameter at layer id i of n gets ``lr * layer_decay_rate ** (n - 1 - i)``: the embeddings the smallest
    rate, the last block ``lr * rate``, and everything outside the backbone (neck, heads) the full ``lr``. All other
    ``paramwise_cfg`` options (``custom_keys``, ``norm_decay_mult``, ``flat_decay_mult``, ...) work as in MMEngine's
    default constructor and multiply with the decay.

    Example::

        optim_wrapper = dict(
            type='OptimWrapper',
            optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
            constructor='mmssm.LayerDecayOptimWrapperConstructor',
            paramwise_cfg=dict(layer_decay_rate=0.9, flat_decay_mult=0.,
                               custom_keys={'.A_log': dict(decay_mult=0.), '.A_b_log': dict(decay_mult=0.)}))
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None):
        paramwise_cfg = dict(paramwise_cfg or {})
        paramwise_cfg.setdefault('layer_decay_rate', 1.0)  # kept in: an empty paramwise_cfg skips add_params
        self.layer_decay_rate = paramwise_cfg['layer_decay_rate']
        if not isinstance(self.layer_decay_rate, (int, float)) or not 0 < self.layer_decay_rate <= 1:
            raise ValueError(f'LayerDecayOptimWrapperConstructor: layer_decay_rate must be in (0, 1], '
                             f'got {self.layer_decay_rate!r}.')
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def add_params(self, params: list, module: nn.Module, prefix: str = '', is_dcn_module=None) -> None:
        if prefix:
            return super().add_params(params, module, prefix, is_dcn_module)
        start = len(params)
        super().add_params(params, module, prefix, is_dcn_module)
        backbone, backbone_prefix = _find_backbone(module)
        names = {id(param): name for name, param in module.named_parameters()}
        counts = {}
        for group in params[start:]:
            name = names[id(group['params'][0])]
            layer_id, num_layers = backbone.get_layer_depth(name, backbone_prefix)
            scale = self.layer_decay_rate ** (num_layers - 1 - layer_id)
            group['lr'] = group.get('lr', self.base_lr) * scale
            group['lr_scale'] = scale
            group['layer_id'] = layer_id
            counts[layer_id] = counts.get(layer_id, 0) + 1
        MMLogger.get_current_instance().info(
            f'layer-wise lr decay {self.layer_decay_rate}: '
            + ', '.join(f'layer {i}: {n} params x{self.layer_decay_rate ** (num_layers - 1 - i):.3g}'
                        for i, n in sorted(counts.items())))
