from .attention_pooling_head import build_attention_pooling_head

__all__ = ['build_attention_pooling_head']
