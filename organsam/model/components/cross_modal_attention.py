"""CRISP-SAM2's progressive cross-modal interaction between image tokens and text tokens.

Two levels: (1) image tokens attend to the text and text tokens attend to the image, both from the same
inputs; each stream is then fused with an MLP; (2) the fused image tokens attend a second time to the
fused text. The result is "cross-modal contextualised semantics": an image-shaped feature map that carries
the meaning of the prompted organ's name and description, plus the image-aware text tokens.

The attention may run on an average-pooled grid (``pool``); the change it makes is upsampled bilinearly
and added to the full-resolution input, so fine detail is kept.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from organsam.model.components.attention import FeedForward, MultiHeadAttention
from organsam.model.components.slice_position_encoding import sine_encoding_2d

__all__ = ["CrossModalAttention"]


class CrossModalAttention(nn.Module):
    """Progressive two-level visual <-> text cross-attention.

    Args:
        dim: channels of the image features and width of the text tokens.
        heads: attention heads.
        mlp_ratio: hidden width of the fusion MLPs relative to ``dim``.
        pool: average-pooling factor of the image grid inside the attention (1 = full resolution).
    """

    def __init__(self, dim: int = 256, heads: int = 8, mlp_ratio: float = 2.0, pool: int = 2) -> None:
        super().__init__()
        if pool < 1:
            raise ValueError(f"pool must be >= 1, got {pool}")
        hidden = int(dim * mlp_ratio)
        self.dim = dim
        self.pool = pool
        self.norm_v1 = nn.LayerNorm(dim)
        self.norm_t1 = nn.LayerNorm(dim)
        self.image_to_text = MultiHeadAttention(dim, heads)
        self.text_to_image = MultiHeadAttention(dim, heads)
        self.fuse_image = FeedForward(dim, hidden)
        self.fuse_text = FeedForward(dim, hidden)
        self.norm_v2 = nn.LayerNorm(dim)
        self.norm_t2 = nn.LayerNorm(dim)
        self.image_to_text_2 = MultiHeadAttention(dim, heads)
        self.mlp_2 = FeedForward(dim, hidden)

    def forward(self, visual: Tensor, text: Tensor, text_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Let image and text features interact.

        Args:
            visual: (B, dim, H, W) image features.
            text: (B, L, dim) text tokens (e.g. the organ name and its knowledge sentences).
            text_mask: optional (B, L) bool, True for real tokens (the first token must be real).

        Returns:
            semantics (B, dim, H, W) and the image-aware text tokens (B, L, dim).
        """
        B, C, H, W = visual.shape
        if self.dim != C or text.ndim != 3 or text.shape[0] != B or text.shape[2] != self.dim:
            raise ValueError(
                f"expected visual (B, {self.dim}, H, W) and text (B, L, {self.dim}), got "
                f"{tuple(visual.shape)} and {tuple(text.shape)}"
            )
        x = F.avg_pool2d(visual, self.pool, ceil_mode=True) if self.pool > 1 else visual
        h, w = x.shape[-2:]
        v = x.flatten(2).transpose(1, 2)
        pos = sine_encoding_2d(h, w, C, device=v.device).flatten(1).t().unsqueeze(0).to(v.dtype)

        # Level 1: image -> text and text -> image from the same inputs, then an MLP fuses each stream.
        vn, tn = self.norm_v1(v), self.norm_t1(text)
        v1 = v + self.image_to_text(vn + pos, tn, tn, text_mask)
        t1 = text + self.text_to_image(tn, vn + pos, vn)
        v1 = v1 + self.fuse_image(v1)
        t1 = t1 + self.fuse_text(t1)

        # Level 2: the fused image tokens attend to the fused text.
        vn, tn = self.norm_v2(v1), self.norm_t2(t1)
        v2 = v1 + self.image_to_text_2(vn + pos, tn, tn, text_mask)
        v2 = v2 + self.mlp_2(v2)

        delta = (v2 - v).transpose(1, 2).reshape(B, C, h, w)
        if self.pool > 1:
            delta = F.interpolate(delta, size=(H, W), mode="bilinear", align_corners=False)
        return visual + delta.to(visual.dtype), t1
