"""Token pruning for SSM backbones: ToP-ViM (top.py)."""
from .top import ToPPruning, ToPVim, gap_counts, select_tokens, token_importance

__all__ = ['ToPPruning', 'ToPVim', 'gap_counts', 'select_tokens', 'token_importance']
