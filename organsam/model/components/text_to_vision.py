"""SEG-SAM's text-to-vision semantic module: organ knowledge transferred into the visual features.

Every knowledge sentence of every vocabulary organ (e.g. 84 organs x 5 sentences) becomes a key/value
token: its sentence embedding projected to the visual width, plus a projection of the organ's name
embedding (which organ the sentence describes). The image tokens cross-attend to all of them, then an
MLP follows; the result is added back to the image features with a learnable per-channel gain.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from organsam.model.components.attention import FeedForward, MultiHeadAttention
from organsam.model.components.slice_position_encoding import sine_encoding_2d
from organsam.model.components.text_projection import TextProjection

__all__ = ["TextToVision"]


class TextToVision(nn.Module):
    """Cross-attention from image tokens to all organs' knowledge sentences.

    Args:
        text_dim: width D of the sentence embeddings.
        dim: channels of the visual features (256).
        heads: attention heads.
        pool: pooling of the image grid inside the attention.
        init_gain: initial per-channel gain of the residual.
    """

    def __init__(self, text_dim: int, dim: int = 256, heads: int = 8, pool: int = 2, init_gain: float = 0.1) -> None:
        super().__init__()
        self.pool = pool
        self.sentence_proj = TextProjection(text_dim, dim)
        self.organ_proj = nn.Linear(text_dim, dim)
        self.norm_v = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads)
        self.ffn = FeedForward(dim, 2 * dim)
        self.gain = nn.Parameter(torch.full((dim,), float(init_gain)))

    def forward(self, visual: Tensor, knowledge: Tensor, knowledge_mask: Tensor, names: Tensor) -> Tensor:
        """Enrich image features with organ knowledge.

        Args:
            visual: (B, dim, H, W) image features.
            knowledge: (K, S, D) sentence embeddings (zero padded).
            knowledge_mask: (K, S) bool, True for real sentences.
            names: (K, D) organ-name embeddings.

        Returns:
            (B, dim, H, W) enriched features.
        """
        B, C, H, W = visual.shape
        K, S, _ = knowledge.shape
        tokens = self.sentence_proj(knowledge).squeeze(-2) + self.organ_proj(names).unsqueeze(1)  # (K, S, dim)
        tokens = tokens.reshape(1, K * S, C).expand(B, -1, -1)
        mask = knowledge_mask.reshape(1, K * S).expand(B, -1)
        x = F.avg_pool2d(visual, self.pool, ceil_mode=True) if self.pool > 1 else visual
        h, w = x.shape[-2:]
        v = x.flatten(2).transpose(1, 2)
        pos = sine_encoding_2d(h, w, C, device=v.device).flatten(1).t().unsqueeze(0).to(v.dtype)
        y = self.attn(self.norm_v(v) + pos, tokens, tokens, mask)
        y = y + self.ffn(v + y)
        y = y.transpose(1, 2).reshape(B, C, h, w)
        if self.pool > 1:
            y = F.interpolate(y, size=(H, W), mode="bilinear", align_corners=False)
        return visual + y * self.gain.to(y.dtype)[None, :, None, None]
