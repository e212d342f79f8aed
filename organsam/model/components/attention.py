"""Multi-head attention with separate query / key-value widths and an optional key padding mask."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MultiHeadAttention", "FeedForward"]


class MultiHeadAttention(nn.Module):
    """Multi-head attention through :func:`torch.nn.functional.scaled_dot_product_attention`.

    Args:
        dim: width of the queries and of the output.
        heads: attention heads (``dim`` must be divisible by it).
        kv_dim: width of keys and values (default ``dim``).
    """

    def __init__(self, dim: int, heads: int = 8, kv_dim: int | None = None) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by heads={heads}")
        kv_dim = kv_dim or dim
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(kv_dim, dim)
        self.v_proj = nn.Linear(kv_dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """Attend.

        Args:
            q: (B, Nq, dim) queries.
            k: (B, Nk, kv_dim) keys.
            v: (B, Nk, kv_dim) values.
            key_mask: optional (B, Nk) bool, True where a key may be attended to (every row needs one).

        Returns:
            (B, Nq, dim).
        """
        B, Nq, _ = q.shape
        Nk = k.shape[1]
        q = self.q_proj(q).view(B, Nq, self.heads, -1).transpose(1, 2)
        k = self.k_proj(k).view(B, Nk, self.heads, -1).transpose(1, 2)
        v = self.v_proj(v).view(B, Nk, self.heads, -1).transpose(1, 2)
        mask = key_mask[:, None, None, :] if key_mask is not None else None
        out = F.scaled_dot_product_attention(q, k, v.to(q.dtype), attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(B, Nq, -1))


class FeedForward(nn.Module):
    """Pre-norm MLP block: LayerNorm, Linear, GELU, Linear (no residual; the caller adds it).

    Args:
        dim: input and output width.
        hidden: hidden width.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """(..., dim) -> (..., dim)."""
        return self.fc2(F.gelu(self.fc1(self.norm(x))))
