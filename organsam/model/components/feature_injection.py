"""CRISP-SAM2's semantic injection: cross-modal semantics added into the image encoder's levels and neck.

A shared MLP (1x1 convolutions) turns the semantics into a common injection feature; one MLP per target
level maps it to that level's channels. Each residual is scaled by a learnable per-channel gain (layer
scale, initialised small) so that the pretrained encoder is barely changed before training.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FeatureInjection"]


class FeatureInjection(nn.Module):
    """Shared MLP plus one MLP per level producing residuals for encoder feature maps.

    Args:
        dim: channels of the semantics.
        level_channels: channels of each target, keyed by level index (e.g. ``{2: 160, 3: 320, 4: 256}``
            where 4 names the neck output / image embedding).
        hidden: width of the shared feature.
        init_scale: initial value of the per-channel output gains.
    """

    def __init__(
        self, dim: int, level_channels: Mapping[int, int], hidden: int = 256, init_scale: float = 1e-2
    ) -> None:
        super().__init__()
        if not level_channels:
            raise ValueError("FeatureInjection needs at least one target level")
        self.levels = tuple(sorted(int(k) for k in level_channels))
        self.shared = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, hidden, 1), nn.GELU())
        self.heads = nn.ModuleDict(
            {
                str(k): nn.Sequential(nn.Conv2d(hidden, hidden, 1), nn.GELU(), nn.Conv2d(hidden, int(c), 1))
                for k, c in level_channels.items()
            }
        )
        self.gains = nn.ParameterDict(
            {str(k): nn.Parameter(torch.full((int(c),), float(init_scale))) for k, c in level_channels.items()}
        )

    def shared_features(self, semantics: Tensor) -> Tensor:
        """(B, dim, h, w) semantics -> (B, hidden, h, w) shared injection feature (compute once per forward)."""
        return self.shared(semantics)

    def residual(self, level: int, shared: Tensor, size: tuple[int, int] | torch.Size | None = None) -> Tensor:
        """Residual for one level.

        Args:
            level: a key of ``level_channels``.
            shared: (B, hidden, h, w) from :meth:`shared_features`.
            size: (H, W) of the target feature map (bilinear resize when it differs from (h, w)).

        Returns:
            (B, C_level, H, W).
        """
        key = str(level)
        if key not in self.heads:
            raise KeyError(f"no injection MLP for level {level}; levels: {self.levels}")
        y = self.heads[key](shared)
        if size is not None and tuple(y.shape[-2:]) != tuple(size):
            y = F.interpolate(y, size=tuple(size), mode="bilinear", align_corners=False)
        return y * self.gains[key].to(y.dtype)[None, :, None, None]
