"""Token pruning for SSM backbones: ToP-ViM (top.py) and DyVM (dyvm.py, dyvm_loss.py, dyvm_classifier.py)."""
from .dyvm import DyVim, TokenKeepPredictor
from .dyvm_classifier import build_dyvm_classifier  # noqa: F401  (registers mmssm.DyVMClassifier)
from .dyvm_loss import DyVMLoss
from .top import ToPPruning, ToPVim, gap_counts, select_tokens, token_importance
from .top_plain_mamba import ToPPlainMamba  # noqa: F401  (registers mmssm.ToPPlainMamba)

__all__ = ['DyVMLoss', 'DyVim', 'TokenKeepPredictor', 'ToPPruning', 'ToPVim', 'gap_counts', 'select_tokens',
           'token_importance']
