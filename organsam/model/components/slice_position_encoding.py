"""Sinusoidal position encodings used by the 3-D slice memory.

Two encodings live here because the memory encoder and the memory attention must share them exactly:

* :class:`SlicePositionEncoding` encodes the *signed* distance between a memory slice and the slice
  being segmented (in slices or in millimetres), so the attention can tell "two slices above" from
  "two slices below" and near from far.
* :func:`sine_encoding_2d` is the fixed 2-D sine/cosine encoding of a ``(H, W)`` feature grid
  (DETR-style, normalised coordinates), added to the keys/queries of the memory attention.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["SlicePositionEncoding", "sinusoid_1d", "sine_encoding_2d"]


def sinusoid_1d(positions: Tensor, dim: int, max_period: float = 10000.0, min_period: float = 2.0) -> Tensor:
    """Sine/cosine features of real-valued (possibly negative) positions.

    Frequencies are geometrically spaced so that the shortest wavelength is ``min_period`` and the longest
    ``max_period`` (in the units of ``positions``). The sine half is odd in the position, so the sign of a
    signed distance is kept.

    Args:
        positions: any shape ``(...)``, float.
        dim: even number of output channels.
        max_period: longest wavelength.
        min_period: shortest wavelength.

    Returns:
        ``(..., dim)`` float32 tensor: ``[sin(p * w_0), ..., sin(p * w_{dim/2-1}), cos(...), ...]``.
    """
    if dim <= 0 or dim % 2:
        raise ValueError(f"sinusoid dim must be a positive even number, got {dim}")
    if not (0 < min_period < max_period):
        raise ValueError(f"need 0 < min_period < max_period, got {min_period} and {max_period}")
    half = dim // 2
    steps = torch.arange(half, device=positions.device, dtype=torch.float32) / max(half - 1, 1)
    wavelengths = min_period * (max_period / min_period) ** steps
    freqs = 2.0 * math.pi / wavelengths
    angles = positions.to(torch.float32).unsqueeze(-1) * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class SlicePositionEncoding(nn.Module):
    """Encoding of the signed distance from a memory slice to the current slice.

    ``distance`` may be in slices or in millimetres; ``scale`` converts it to the unit the wavelengths are
    expressed in (e.g. ``scale=1/2.5`` to feed millimetres to an encoding tuned for 2.5 mm slices). With
    ``learnable=True`` a linear layer (initialised near the identity on the sinusoid) follows, as SAM2 does
    for its object-pointer temporal encoding, so training can reshape the code.

    Args:
        dim: output channels (even).
        scale: multiplier applied to the distances before encoding.
        max_period: longest wavelength, in scaled units (default 64 slices).
        min_period: shortest wavelength, in scaled units.
        learnable: add a trainable ``Linear(dim, dim)`` after the fixed sinusoid.
    """

    def __init__(
        self, dim: int, scale: float = 1.0, max_period: float = 64.0, min_period: float = 2.0, learnable: bool = False
    ) -> None:
        super().__init__()
        if dim <= 0 or dim % 2:
            raise ValueError(f"SlicePositionEncoding dim must be a positive even number, got {dim}")
        self.dim = dim
        self.scale = float(scale)
        self.max_period = float(max_period)
        self.min_period = float(min_period)
        self.proj: nn.Linear | None = None
        if learnable:
            self.proj = nn.Linear(dim, dim)
            with torch.no_grad():
                self.proj.weight.copy_(torch.eye(dim) + 0.01 * torch.randn(dim, dim))
                self.proj.bias.zero_()

    def forward(self, distance: Tensor) -> Tensor:
        """Encode signed distances.

        Args:
            distance: ``(...)`` signed distances (memory slice index minus current index, or in mm).

        Returns:
            ``(..., dim)`` encoding (float32, or the autocast dtype after the learnable projection).
        """
        enc = sinusoid_1d(distance * self.scale, self.dim, self.max_period, self.min_period)
        if self.proj is not None:
            enc = self.proj(enc.to(self.proj.weight.dtype))
        return enc

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, scale={self.scale}, periods=({self.min_period}, {self.max_period}), "
            f"learnable={self.proj is not None}"
        )


def sine_encoding_2d(
    height: int, width: int, dim: int, device: torch.device | str | None = None, temperature: float = 10000.0
) -> Tensor:
    """Fixed 2-D sine/cosine position encoding of a feature grid (DETR-style).

    Half of the channels encode the row (y), half the column (x); coordinates are normalised to
    ``(0, 2*pi]`` so the encoding does not depend on the grid size (a pooled 32x32 grid gets the
    same code as the matching places of the 64x64 grid, up to the cell centres).

    Args:
        height: grid rows ``H``.
        width: grid columns ``W``.
        dim: channels; must be divisible by 4.
        device: where to build it.
        temperature: frequency base.

    Returns:
        ``(dim, H, W)`` float32 tensor.
    """
    if dim <= 0 or dim % 4:
        raise ValueError(f"2-D sine encoding needs dim divisible by 4, got {dim}")
    quarter = dim // 4
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height * 2 * math.pi
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width * 2 * math.pi
    freqs = temperature ** (-torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    ay = ys[:, None] * freqs[None, :]  # (H, q)
    ax = xs[:, None] * freqs[None, :]  # (W, q)
    enc_y = torch.cat([ay.sin(), ay.cos()], dim=-1)  # (H, 2q)
    enc_x = torch.cat([ax.sin(), ax.cos()], dim=-1)  # (W, 2q)
    grid = torch.cat(
        [enc_y[:, None, :].expand(height, width, 2 * quarter), enc_x[None, :, :].expand(height, width, 2 * quarter)],
        dim=-1,
    )
    return grid.permute(2, 0, 1).contiguous()
