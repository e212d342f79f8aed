"""CRISP-SAM2's semantic prompt encoder: dense and sparse prompt embeddings from cross-modal semantics.

Replaces geometric prompts: no box or click is needed. The dense prompt comes from a small feature
pyramid over the semantics and the image embedding (full and half resolution, fused), a cross-attention
of the pixels to the text tokens and a depth-wise separable convolution; the sparse prompt tokens come
from pooling the semantics (mean and max) together with the organ-name token, through an MLP. Both are
added to what SAM's own prompt encoder gives (boxes/points, when present, still work alongside). Both
start at small gains, so an untrained module leaves the pretrained decoder's box behaviour nearly intact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from organsam.model.components.attention import MultiHeadAttention
from organsam.model.components.blocks import MLP, LayerNorm2d
from organsam.model.components.slice_position_encoding import sine_encoding_2d

__all__ = ["SemanticPromptEncoder"]


class SemanticPromptEncoder(nn.Module):
    """Dense (B, dim, 64, 64) and sparse (B, N, dim) prompt embeddings from semantics and text.

    Args:
        dim: channels / token width (256).
        heads: attention heads of the pixel -> text cross-attention.
        num_sparse: sparse tokens produced.
        pool: pooling of the pixel grid inside the cross-attention.
        dense_init: initial per-channel gain of the dense embedding (small: the pretrained decoder first
            sees almost its usual 'no mask' embedding).
        sparse_init: initial scale of the sparse tokens (their LayerNorm weight; small for the same reason).
    """

    def __init__(
        self,
        dim: int = 256,
        heads: int = 8,
        num_sparse: int = 4,
        pool: int = 2,
        dense_init: float = 0.1,
        sparse_init: float = 0.1,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.pool = pool
        self.num_sparse = num_sparse
        self.fuse = nn.Conv2d(2 * dim, dim, kernel_size=1)
        self.coarse = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, groups=dim), nn.Conv2d(dim, dim, 1))
        self.norm = LayerNorm2d(dim)
        self.norm_q = nn.LayerNorm(dim)
        self.norm_t = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads)
        self.out = nn.Sequential(
            nn.Conv2d(dim, dim, 1),
            nn.Conv2d(dim, dim, 3, padding=1, groups=dim),
            LayerNorm2d(dim),
            nn.GELU(),
            nn.Conv2d(dim, dim, 1),
        )
        self.dense_gain = nn.Parameter(torch.full((dim,), float(dense_init)))
        self.sparse_mlp = MLP(3 * dim, dim, num_sparse * dim, 2)
        self.sparse_norm = nn.LayerNorm(dim)
        nn.init.constant_(self.sparse_norm.weight, sparse_init)

    def forward(
        self, semantics: Tensor, embedding: Tensor, text: Tensor, text_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Make prompt embeddings.

        Args:
            semantics: (B, dim, H, W) cross-modal semantics.
            embedding: (B, dim, H, W) image embedding.
            text: (B, L, dim) text tokens; token 0 is the organ name.
            text_mask: optional (B, L) bool, True for real tokens.

        Returns:
            sparse (B, num_sparse, dim) and dense (B, dim, H, W).
        """
        B, C, H, W = semantics.shape
        f = self.fuse(torch.cat([semantics, embedding.to(semantics.dtype)], dim=1))
        coarse = self.coarse(F.avg_pool2d(f, 2, ceil_mode=True))
        f = self.norm(f + F.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False))

        p = F.avg_pool2d(f, self.pool, ceil_mode=True) if self.pool > 1 else f
        h, w = p.shape[-2:]
        q = p.flatten(2).transpose(1, 2)
        pos = sine_encoding_2d(h, w, C, device=q.device).flatten(1).t().unsqueeze(0).to(q.dtype)
        tn = self.norm_t(text)
        a = self.attn(self.norm_q(q) + pos, tn, tn, text_mask).transpose(1, 2).reshape(B, C, h, w)
        if self.pool > 1:
            a = F.interpolate(a, size=(H, W), mode="bilinear", align_corners=False)
        dense = self.out(f + a) * self.dense_gain.to(f.dtype)[None, :, None, None]

        pooled = torch.cat(
            [semantics.mean(dim=(2, 3)), semantics.amax(dim=(2, 3)), text[:, 0].to(semantics.dtype)], dim=1
        )
        sparse = self.sparse_norm(self.sparse_mlp(pooled).view(B, self.num_sparse, C))
        return sparse, dense
