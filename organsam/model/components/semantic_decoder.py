"""SEG-SAM's semantic-aware decoder, independent of SAM's mask decoder.

One query per vocabulary organ (its name embedding projected, plus a shared learned bias) goes through a
small transformer decoder (query self-attention, cross-attention to the pooled image tokens, MLP). Each
query output gives a presence logit (multi-label classification of the organs on the slice, prompted or
not) and, through a hypernetwork MLP, 32 weights dotted with a 4x upscaled pixel feature map: a mask per
organ. The prompted organ's semantic mask is the row of its query.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from organsam.model.components.attention import FeedForward, MultiHeadAttention
from organsam.model.components.blocks import MLP, LayerNorm2d
from organsam.model.components.slice_position_encoding import sine_encoding_2d
from organsam.model.components.text_projection import TextProjection

__all__ = ["SemanticDecoder"]


class _QueryLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = MultiHeadAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = MultiHeadAttention(dim, heads)
        self.ffn = FeedForward(dim, 4 * dim)

    def forward(self, q: Tensor, mem: Tensor, pos: Tensor) -> Tensor:
        y = self.norm1(q)
        q = q + self.self_attn(y, y, y)
        q = q + self.cross_attn(self.norm2(q), mem + pos, mem)
        return q + self.ffn(q)


class SemanticDecoder(nn.Module):
    """Class queries -> per-organ presence logits and masks.

    Args:
        text_dim: width D of the organ-name embeddings.
        dim: channels of the visual features and query width (256).
        heads: attention heads.
        layers: decoder layers.
        pool: pooling of the image grid the queries attend to.
        mask_dim: channels of the upscaled pixel features.
    """

    def __init__(
        self, text_dim: int, dim: int = 256, heads: int = 8, layers: int = 2, pool: int = 2, mask_dim: int = 32
    ) -> None:
        super().__init__()
        self.pool = pool
        self.query_proj = TextProjection(text_dim, dim)
        self.query_bias = nn.Parameter(torch.zeros(dim))
        self.memory_norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(_QueryLayer(dim, heads) for _ in range(layers))
        self.out_norm = nn.LayerNorm(dim)
        self.class_head = nn.Linear(dim, 1)
        self.mask_embed = MLP(dim, dim, mask_dim, 3)
        self.pixel_decoder = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, mask_dim, kernel_size=2, stride=2),
            nn.GELU(),
        )

    def forward(self, visual: Tensor, names: Tensor) -> tuple[Tensor, Tensor]:
        """Classify and segment every organ.

        Args:
            visual: (B, dim, 64, 64) image features (e.g. after :class:`TextToVision`).
            names: (K, D) organ-name embeddings.

        Returns:
            class logits (B, K) and mask logits (B, K, 256, 256).
        """
        B, C, H, W = visual.shape
        q = (self.query_proj(names).squeeze(-2) + self.query_bias).unsqueeze(0).expand(B, -1, -1)
        x = F.avg_pool2d(visual, self.pool, ceil_mode=True) if self.pool > 1 else visual
        h, w = x.shape[-2:]
        mem = self.memory_norm(x.flatten(2).transpose(1, 2))
        pos = sine_encoding_2d(h, w, C, device=mem.device).flatten(1).t().unsqueeze(0).to(mem.dtype)
        for layer in self.layers:
            q = layer(q, mem, pos)
        q = self.out_norm(q)
        class_logits = self.class_head(q).squeeze(-1)
        pixels = self.pixel_decoder(visual)
        Bp, Cp, Hp, Wp = pixels.shape
        weights = self.mask_embed(q).to(pixels.dtype)
        masks = (weights @ pixels.reshape(Bp, Cp, Hp * Wp)).reshape(Bp, -1, Hp, Wp)
        return class_logits, masks
