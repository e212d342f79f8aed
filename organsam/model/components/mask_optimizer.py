"""Iterative mask optimizer (PG-SAM): feed the mask back with the decoder's features and correct it.

Each iteration concatenates nothing large: the decoder's 256x256 pixel features are projected once per
image to a small width at 128x128; every mask (its probability and its logit, squashed) is downsampled by
a strided convolution and added; two convolutions mix them and a transposed convolution brings a residual
logit back to 256x256, added to the mask. Iterations share weights; ``iterations=0`` disables it. The
residual's gain starts small so an untrained optimizer leaves masks almost unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from organsam.model.components.blocks import LayerNorm2d

__all__ = ["MaskOptimizer"]


class MaskOptimizer(nn.Module):
    """Residual mask correction from (mask, decoder features), applied ``iterations`` times.

    Args:
        feat_dim: channels of the decoder pixel features (32).
        hidden: working width (at half resolution).
        iterations: default number of iterations.
        init_gain: initial gain of each residual.
    """

    def __init__(self, feat_dim: int = 32, hidden: int = 16, iterations: int = 1, init_gain: float = 0.1) -> None:
        super().__init__()
        if iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {iterations}")
        self.iterations = iterations
        self.feature_down = nn.Conv2d(feat_dim, hidden, kernel_size=2, stride=2)
        self.mask_down = nn.Conv2d(2, hidden, kernel_size=3, stride=2, padding=1)
        self.mix = nn.Sequential(
            LayerNorm2d(hidden),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.GELU(),
        )
        self.up = nn.Sequential(
            nn.ConvTranspose2d(hidden, hidden, kernel_size=2, stride=2), nn.GELU(), nn.Conv2d(hidden, 1, 1)
        )
        self.gain = nn.Parameter(torch.tensor(float(init_gain)))

    def forward(self, logits: Tensor, features: Tensor, iterations: int | None = None) -> list[Tensor]:
        """Refine masks.

        Args:
            logits: (P, M, 256, 256) mask logits (M masks per prompt set / image).
            features: (P, feat_dim, 256, 256) decoder pixel features of each prompt set.
            iterations: override the default number of iterations.

        Returns:
            the logits after each iteration, each (P, M, 256, 256); empty for 0 iterations.
        """
        n = self.iterations if iterations is None else int(iterations)
        if n <= 0:
            return []
        P, M, H, W = logits.shape
        f = self.feature_down(features)  # (P, hidden, H/2, W/2)
        f = f.unsqueeze(1).expand(P, M, *f.shape[1:]).reshape(P * M, *f.shape[1:])
        out: list[Tensor] = []
        x = logits.reshape(P * M, 1, H, W)
        for _ in range(n):
            m = torch.cat([torch.sigmoid(x), torch.tanh(x / 8.0)], dim=1).to(f.dtype)
            h = self.mix(f + self.mask_down(m))
            x = x + self.up(h).to(x.dtype) * self.gain.to(x.dtype)
            out.append(x.reshape(P, M, H, W))
        return out
