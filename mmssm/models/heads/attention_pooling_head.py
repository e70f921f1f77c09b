"""``mmssm.AttentionPoolingHead``: an MMPretrain classification head that pools the last feature map with
:class:`~mmssm.models.layers.AttentionPool` and classifies with a linear layer.

MMPretrain is imported when the head is built, not when ``mmssm.models`` is imported, so segmentation and detection
users do not pay for importing it (the registry entry is a builder function that makes the class on first use)."""
import functools

from mmssm.registry import MODELS


@functools.cache
def _head_class():
    from mmpretrain.models.heads import ClsHead
    from torch import nn

    from ..layers.attention_pool import AttentionPool

    class AttentionPoolingHead(ClsHead):
        """Attention pooling (learned queries over all tokens of the last feature map, any size) + LayerNorm + a
        linear classifier.

        Args:
            num_classes (int): classes.
            in_channels (int): channels of the last feature map (or tokens).
            num_heads (int, optional): attention heads of the pooling; must divide ``in_channels``.
            num_queries (int): learned queries, averaged. Default: 1.
            dropout (float): dropout before the classifier. Default: 0.
            **kwargs: ClsHead's ``loss``, ``topk``, ``cal_acc``, ``init_cfg``.
        """

        def __init__(self, num_classes: int, in_channels: int, num_heads: int | None = None, num_queries: int = 1,
                     dropout: float = 0., init_cfg=None, **kwargs):
            if init_cfg is None:
                init_cfg = dict(type='TruncNormal', layer='Linear', std=0.02)
            super().__init__(init_cfg=init_cfg, **kwargs)
            if not isinstance(num_classes, int) or num_classes <= 0:
                raise ValueError(f'AttentionPoolingHead: num_classes must be a positive int, got {num_classes!r}.')
            self.num_classes, self.in_channels = num_classes, in_channels
            self.pool = AttentionPool(in_channels, num_heads=num_heads, num_queries=num_queries)
            self.norm = nn.LayerNorm(in_channels)
            self.dropout = nn.Dropout(dropout)
            self.fc = nn.Linear(in_channels, num_classes)

        def pre_logits(self, feats):
            return self.norm(self.pool(feats[-1]))

        def forward(self, feats):
            return self.fc(self.dropout(self.pre_logits(feats)))

    return AttentionPoolingHead


@MODELS.register_module(name='AttentionPoolingHead')
def build_attention_pooling_head(**kwargs):
    return _head_class()(**kwargs)
