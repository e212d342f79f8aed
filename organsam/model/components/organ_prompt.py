"""Organ prompt tokens: extra sparse prompt tokens made from the organ's text embedding.

A small MLP maps the embedding of the organ's prompt text (e.g. MiniLM, 384-d) to ``num_tokens`` tokens of
the mask decoder's width (256). They are appended to SAM's box/point tokens (``SamCore.decode(...,
sparse_extra=...)``), so the frozen decoder learns *which* structure inside a loose box is wanted: an atlas
box around the pancreas also holds bowel and vessels, one around the liver also holds kidney and stomach.
This is CRISP-SAM2's semantic prompt reduced to the part that three training patients can teach. The last
layer starts at zero: an untrained module gives zero tokens, which leave LiteMedSAM's box masks almost
unchanged (zero tokens still take part in attention; see ``tests/model/test_model_organ_prompt.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["OrganPromptTokens"]


class OrganPromptTokens(nn.Module):
    """(B, text_dim) organ text embeddings -> (B, num_tokens, dim) sparse prompt tokens.

    Args:
        text_dim: width of the text embedding (384 for all-MiniLM-L6-v2).
        dim: token width (the mask decoder's, 256).
        num_tokens: tokens per organ.
        hidden: hidden width of the MLP.
    """

    def __init__(self, text_dim: int = 384, dim: int = 256, num_tokens: int = 2, hidden: int = 256) -> None:
        super().__init__()
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
        self.dim = dim
        self.num_tokens = num_tokens
        self.mlp = nn.Sequential(nn.Linear(text_dim, hidden), nn.GELU(), nn.Linear(hidden, num_tokens * dim))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, text: Tensor) -> Tensor:
        """Tokens of B organs.

        Args:
            text: (B, text_dim) organ text embeddings.

        Returns:
            (B, num_tokens, dim) tokens.
        """
        if text.ndim != 2 or text.shape[1] != self.mlp[0].in_features:
            raise ValueError(f"text must be (B, {self.mlp[0].in_features}), got {tuple(text.shape)}")
        return self.mlp(text).view(text.shape[0], self.num_tokens, self.dim)

    @torch.no_grad()
    def table(self, text: Tensor) -> Tensor:
        """(K, num_tokens, dim) tokens of a whole vocabulary (K, text_dim), detached, for inference tables."""
        return self(text).detach().float().contiguous()
