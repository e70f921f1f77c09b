"""Helpers shared by the token-pruning backbones: moving token features between a full-length sequence and the
kept subset of it."""
import torch


def gather_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """tokens (batch, L, C), index (batch, K) of slots -> (batch, K, C): the tokens at those slots."""
    return tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def scatter_tokens(base: torch.Tensor, positions: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """base (batch, L, C) with ``tokens`` (batch, K, C) written at ``positions`` (batch, K) (original indices):
    a pruned sequence restored to full length; the slots no token is written to keep ``base``."""
    return base.to(tokens.dtype).scatter(1, positions.unsqueeze(-1).expand_as(tokens), tokens)
