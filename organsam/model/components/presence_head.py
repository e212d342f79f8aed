"""Presence / class head: which vocabulary organs are on the slice (multi-label), from text queries.

Each organ's name embedding is projected into a query; the queries attend to the pooled image embedding
(with a 2-D sine position encoding), pass an MLP, and a shared linear layer gives one logit per organ.
Being text-derived, the head scores any organ of the vocabulary without a per-class weight.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from organsam.model.components.attention import FeedForward, MultiHeadAttention
from organsam.model.components.slice_position_encoding import sine_encoding_2d
from organsam.model.components.text_projection import TextProjection

__all__ = ["ClassPresenceHead"]


class ClassPresenceHead(nn.Module):
    """K text queries x pooled image tokens -> (B, K) presence logits.

    Args:
        text_dim: width D of the organ-name embeddings.
        dim: channels of the image embedding (256).
        heads: attention heads.
        pool: pooling of the 64x64 grid (4 -> 16x16 tokens).
    """

    def __init__(self, text_dim: int, dim: int = 256, heads: int = 8, pool: int = 4) -> None:
        super().__init__()
        self.pool = pool
        self.query_proj = TextProjection(text_dim, dim)
        self.norm_m = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads)
        self.ffn = FeedForward(dim, 2 * dim)
        self.norm_out = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, 1)

    def forward(self, embedding: Tensor, names: Tensor) -> Tensor:
        """Presence logits.

        Args:
            embedding: (B, dim, 64, 64) image embedding.
            names: (K, D) organ-name embeddings.

        Returns:
            (B, K) logits.
        """
        B, C = embedding.shape[:2]
        x = F.avg_pool2d(embedding, self.pool, ceil_mode=True) if self.pool > 1 else embedding
        h, w = x.shape[-2:]
        mem = self.norm_m(x.flatten(2).transpose(1, 2))
        pos = sine_encoding_2d(h, w, C, device=mem.device).flatten(1).t().unsqueeze(0).to(mem.dtype)
        q = self.query_proj(names).squeeze(-2).unsqueeze(0).expand(B, -1, -1)
        q = q + self.attn(q, mem + pos, mem)
        q = q + self.ffn(q)
        return self.out(self.norm_out(q)).squeeze(-1)
