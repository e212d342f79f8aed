"""Projection of sentence embeddings (e.g. 384-d MiniLM) into the 256-d prompt-token space of the decoder."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TextProjection"]


class TextProjection(nn.Module):
    """MLP from text-embedding space to ``num_tokens`` decoder tokens, each layer-normalised.

    The LayerNorm gives the tokens the scale of SAM's prompt tokens (unit-norm sentence embeddings are
    much smaller), so a pretrained decoder sees inputs of the magnitude it was trained on.

    Args:
        text_dim: width D of the sentence embeddings.
        dim: width of the output tokens (256).
        num_tokens: tokens produced per text.
        hidden: hidden width (default ``dim``).
    """

    def __init__(self, text_dim: int, dim: int = 256, num_tokens: int = 1, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or dim
        self.dim = dim
        self.num_tokens = num_tokens
        self.fc1 = nn.Linear(text_dim, hidden)
        self.fc2 = nn.Linear(hidden, dim * num_tokens)
        self.norm = nn.LayerNorm(dim)

    def forward(self, text: Tensor) -> Tensor:
        """(..., D) sentence embeddings -> (..., num_tokens, dim) tokens."""
        y = self.fc2(F.gelu(self.fc1(text)))
        return self.norm(y.view(*text.shape[:-1], self.num_tokens, self.dim))
