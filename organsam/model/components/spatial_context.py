"""Spatial context for text-image matching: a learned position code and residual dilated convolutions.

A match between an organ's text and one embedding pixel alone cannot tell the two kidneys apart (same tissue,
other side), nor an enhanced kidney from the spleen. :class:`PositionCode` adds a learned 1x1 projection of a
fixed 2-D sine position code (zero at the start, so a pretrained path is unchanged until training finds it
useful); :class:`ContextBlock` stacks (dilations 1, 2, 4, ...) let each pixel read what surrounds it. PG-SAM's
prior aligner and CRISP-SAM2's semantic locator both use them.
"""

from __future__ import annotations

from torch import Tensor, nn

from organsam.model.components.blocks import LayerNorm2d
from organsam.model.components.slice_position_encoding import sine_encoding_2d

__all__ = ["ContextBlock", "PositionCode", "context_stack"]


class ContextBlock(nn.Module):
    """Residual block: LayerNorm, dilated 3x3 convolution, GELU, 1x1 convolution."""

    def __init__(self, dim: int, dilation: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            LayerNorm2d(dim),
            nn.Conv2d(dim, dim, 3, padding=dilation, dilation=dilation),
            nn.GELU(),
            nn.Conv2d(dim, dim, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def context_stack(dim: int, layers: int) -> nn.ModuleList:
    """``layers`` :class:`ContextBlock` of width ``dim`` with dilations 1, 2, 4, ..."""
    return nn.ModuleList(ContextBlock(dim, 2**i) for i in range(layers))


class PositionCode(nn.Conv2d):
    """``x + conv1x1(sine code)``: a learned projection of the fixed 2-D sine position code, zero at the start.

    Args:
        dim: channels of the features it is added to (divisible by 4).
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim, dim, 1)
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        _, C, h, w = x.shape
        code = sine_encoding_2d(h, w, C, device=x.device).to(x.dtype)
        return x + super().forward(code.unsqueeze(0))
