"""SAM's two-way transformer: prompt tokens and image tokens attend to each other in turn.

Listen-only tokens (``listen_only``): tokens that read the other tokens and the image but that no token and
no image token attends to. Adding them leaves SAM's tokens and image tokens exactly as without them, and a
listen-only copy of a SAM output token comes out exactly as that token: many organ queries can be decoded in
one pass without changing what the pretrained decoder computes (PG-SAM's organ tokens).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ProjectedAttention", "TwoWayBlock", "TwoWayTransformer"]


class ProjectedAttention(nn.Module):
    """Multi-head attention with separate q/k/v projections to an optionally reduced width.

    Args:
        embed_dim: width of the inputs and of the output.
        num_heads: heads.
        downsample_rate: the attention works in ``embed_dim // downsample_rate`` features.
    """

    def __init__(self, embed_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        inner = embed_dim // downsample_rate
        if inner % num_heads:
            raise ValueError(f"attention width {inner} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embed_dim, inner)
        self.k_proj = nn.Linear(embed_dim, inner)
        self.v_proj = nn.Linear(embed_dim, inner)
        self.out_proj = nn.Linear(inner, embed_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keys_seen: torch.Tensor | None = None
    ) -> torch.Tensor:
        """q (B, Nq, C), k and v (B, Nk, C) -> (B, Nq, C); ``keys_seen`` (Nk,) bool: only these keys are attended."""
        return self.attend(self.q_proj(q), self.k_proj(k), self.v_proj(v), keys_seen)

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keys_seen: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attention over already projected inputs: q (B, Nq, inner), k and v (B, Nk, inner) -> (B, Nq, C).

        Lets a caller project inputs shared by several batch rows once (e.g. one slice's image tokens for
        every organ prompted on it) and index the projections. ``keys_seen`` (Nk,) bool: attend to these keys
        only (None: all).
        """
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        mask = None if keys_seen is None else keys_seen[None, :]  # (1, Nk): the same keys for every query
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        b, h, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))


class _MLPBlock(nn.Module):
    """lin1, ReLU, lin2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.relu(self.lin1(x)))


class TwoWayBlock(nn.Module):
    """One two-way layer: token self-attention, token->image cross-attention, token MLP,
    image->token cross-attention; each followed by a post-LayerNorm.

    Args:
        embed_dim: channels.
        num_heads: heads.
        mlp_dim: hidden width of the token MLP.
        downsample_rate: width reduction of the cross-attentions.
        skip_first_layer_pe: the first block does not add the query position encoding in self-attention
            and replaces (instead of updates) the tokens with its output.
    """

    def __init__(
        self, embed_dim: int, num_heads: int, mlp_dim: int, downsample_rate: int = 2, skip_first_layer_pe: bool = False
    ) -> None:
        super().__init__()
        self.self_attn = ProjectedAttention(embed_dim, num_heads)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.cross_attn_token_to_image = ProjectedAttention(embed_dim, num_heads, downsample_rate)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.mlp = _MLPBlock(embed_dim, mlp_dim)
        self.norm3 = nn.LayerNorm(embed_dim)
        self.norm4 = nn.LayerNorm(embed_dim)
        self.cross_attn_image_to_token = ProjectedAttention(embed_dim, num_heads, downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
        image_index: torch.Tensor | None = None,
        seen: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries/query_pe (B, Nt, C), keys/key_pe (B, Ni, C) -> updated (queries, keys).

        ``seen`` (Nt,) bool: the tokens other tokens and the image attend to (None: all; False marks the
        listen-only tokens, see the module docstring).

        With ``image_index`` (B,), ``keys``/``key_pe`` hold the I distinct images' tokens (I, Ni, C) and row b
        uses image ``image_index[b]``: the projections that depend on the image alone (token->image keys and
        values, image->token queries) are computed once per image instead of once per row. The result is the
        same as passing ``keys[image_index]`` (to float rounding); the returned keys are (B, Ni, C).
        """
        if image_index is not None:
            return self._forward_shared(queries, keys, query_pe, key_pe, image_index, seen)
        queries = self._self_attention(queries, query_pe, seen)
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))

        queries = self.norm3(queries + self.mlp(queries))

        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries, seen))
        return queries, keys

    def _self_attention(
        self, queries: torch.Tensor, query_pe: torch.Tensor, seen: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.skip_first_layer_pe:
            return self.norm1(self.self_attn(queries, queries, queries, seen))
        q = queries + query_pe
        return self.norm1(queries + self.self_attn(q, q, queries, seen))

    def _forward_shared(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
        image_index: torch.Tensor,
        seen: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        queries = self._self_attention(queries, query_pe, seen)
        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        keys_pe = keys + key_pe
        kp = t2i.k_proj(keys_pe)[image_index]
        vp = t2i.v_proj(keys)[image_index]
        queries = self.norm2(queries + t2i.attend(t2i.q_proj(queries + query_pe), kp, vp))
        queries = self.norm3(queries + self.mlp(queries))
        qp = i2t.q_proj(keys_pe)[image_index]
        q = queries + query_pe
        keys = self.norm4(keys[image_index] + i2t.attend(qp, i2t.k_proj(q), i2t.v_proj(queries), seen))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """Stack of :class:`TwoWayBlock` plus a final token->image attention.

    Args:
        depth: number of blocks (2).
        embed_dim: channels (256).
        num_heads: heads (8).
        mlp_dim: token MLP hidden width (2048).
        downsample_rate: width reduction of the cross-attentions (2).
    """

    def __init__(
        self, depth: int = 2, embed_dim: int = 256, num_heads: int = 8, mlp_dim: int = 2048, downsample_rate: int = 2
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayBlock(embed_dim, num_heads, mlp_dim, downsample_rate, skip_first_layer_pe=(i == 0))
            for i in range(depth)
        )
        self.final_attn_token_to_image = ProjectedAttention(embed_dim, num_heads, downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embed_dim)

    def forward(
        self,
        image_embedding: torch.Tensor,
        image_pe: torch.Tensor,
        tokens: torch.Tensor,
        image_index: torch.Tensor | None = None,
        listen_only: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the transformer.

        Args:
            image_embedding: (B, C, h, w); with ``image_index``, (I, C, h, w) distinct images.
            image_pe: (B, C, h, w) position encoding of the image tokens ((1 or I, ...) with ``image_index``).
            tokens: (B, Nt, C) output + prompt tokens (also used as their own position encoding).
            image_index: (B,) long, the image of each row: the first block's image-only projections are
                then computed once per image (see :meth:`TwoWayBlock.forward`).
            listen_only: (Nt,) bool, True for the listen-only tokens (see the module docstring); None: none.

        Returns:
            tokens (B, Nt, C) and image tokens (B, h*w, C).
        """
        keys = image_embedding.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        if image_index is not None and key_pe.shape[0] != keys.shape[0]:
            key_pe = key_pe.expand(keys.shape[0], -1, -1)
        queries = tokens
        seen = None if listen_only is None else ~listen_only.to(device=tokens.device, dtype=torch.bool)
        for i, layer in enumerate(self.layers):
            shared = image_index if i == 0 else None
            queries, keys = layer(queries, keys, tokens, key_pe, shared, seen)
            if i == 0 and image_index is not None:
                key_pe = key_pe[image_index] if key_pe.shape[0] > 1 else key_pe.expand(keys.shape[0], -1, -1)
        q, k = queries + tokens, keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys
