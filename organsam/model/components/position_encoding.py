"""Random-Fourier-feature position encoding used by SAM's prompt encoder and mask decoder."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["RandomFourierPositionEncoding"]


class RandomFourierPositionEncoding(nn.Module):
    """Encode 2D positions as ``[sin(2*pi*p@G), cos(2*pi*p@G)]`` with a fixed Gaussian matrix G.

    Positions are first normalised to [0, 1] and mapped to [-1, 1]. The encoding is always computed in
    float32 (also under autocast): it is cheap and low precision here would blur the prompt positions.

    Args:
        num_pos_feats: columns of G; the encoding has ``2 * num_pos_feats`` features.
        scale: standard deviation of G's entries at initialisation (the checkpoint overrides G).
    """

    def __init__(self, num_pos_feats: int = 128, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn(2, num_pos_feats))

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) xy in [0, 1] -> (..., 2 * num_pos_feats)."""
        g = self.positional_encoding_gaussian_matrix
        with torch.autocast(device_type=coords.device.type, enabled=False):
            proj = (2.0 * coords.float() - 1.0) @ g.float()
            proj = 2.0 * math.pi * proj
            return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Dense encoding of the centres of an (h, w) grid.

        Args:
            size: (h, w).

        Returns:
            (2 * num_pos_feats, h, w) float32.
        """
        h, w = size
        g = self.positional_encoding_gaussian_matrix
        ys = (torch.arange(h, device=g.device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=g.device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)], dim=-1)
        return self._encode(grid).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Encode pixel coordinates.

        Args:
            coords: (B, N, 2) xy in pixels of an image of ``image_size``.
            image_size: (height, width) of that image.

        Returns:
            (B, N, 2 * num_pos_feats) float32.
        """
        scale = torch.tensor([image_size[1], image_size[0]], dtype=torch.float32, device=coords.device)
        return self._encode(coords.float() / scale)
