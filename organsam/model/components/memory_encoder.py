"""Memory encoder: turns a segmented slice into memory features for the 3-D slice memory (SAM2-style).

The predicted mask logits of a slice (``(B, 1, 256, 256)``, 4x the embedding grid) are squashed with a
sigmoid, downsampled by a stack of stride-2 convolutions to the embedding grid (64x64), added to a
projection of that slice's image embedding, mixed by a few depth-wise conv blocks and projected to
``mem_dim`` channels. The decoder's output token of the slice can also be turned into an "object
pointer" (``(B, mem_dim)``), a compact summary of the object that the memory attention attends to.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from organsam.model.components.blocks import LayerNorm2d
from organsam.model.components.slice_position_encoding import sine_encoding_2d

logger = logging.getLogger(__name__)

__all__ = ["MemoryEncoder", "MemoryEncoderOutput"]


class _ConvBlock(nn.Module):
    """Depth-wise 7x7 conv, channel LayerNorm, point-wise MLP, scaled residual."""

    def __init__(self, dim: int, mlp_ratio: float = 2.0, layer_scale: float = 1e-2) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim)
        self.pw1 = nn.Conv2d(dim, hidden, kernel_size=1)
        self.pw2 = nn.Conv2d(hidden, dim, kernel_size=1)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def forward(self, x: Tensor) -> Tensor:
        y = self.pw2(F.gelu(self.pw1(self.norm(self.dwconv(x)))))
        return x + self.gamma[:, None, None].to(y.dtype) * y


@dataclass
class MemoryEncoderOutput:
    """What one call of :class:`MemoryEncoder` returns.

    Attributes:
        features: ``(B, mem_dim, H, W)`` memory features.
        pos: ``(B, mem_dim, H, W)`` fixed 2-D sine encoding of the memory grid.
        pointer: ``(B, mem_dim)`` object pointer, or ``None`` when no decoder token was given.
    """

    features: Tensor
    pos: Tensor
    pointer: Tensor | None


class MemoryEncoder(nn.Module):
    """Encode (image embedding, predicted mask) of a slice into memory features.

    Args:
        embed_dim: channels of the image embedding (256 for LiteMedSAM).
        mem_dim: channels of the memory features and of the object pointer.
        mask_stride: how much larger the mask is than the embedding grid (4: 256x256 -> 64x64); must
            be a power of two. Masks of another size are resized to ``mask_stride`` times the grid.
        fuser_layers: number of conv blocks mixing mask and image features.
        mlp_ratio: hidden width of the blocks relative to ``embed_dim``.
        token_dim: width of the decoder output token used for the object pointer.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        mem_dim: int = 64,
        mask_stride: int = 4,
        fuser_layers: int = 2,
        mlp_ratio: float = 2.0,
        token_dim: int = 256,
    ) -> None:
        super().__init__()
        if mask_stride < 1 or mask_stride & (mask_stride - 1):
            raise ValueError(f"mask_stride must be a power of two >= 1, got {mask_stride}")
        if mem_dim % 4:
            raise ValueError(f"mem_dim must be divisible by 4 (2-D sine encoding), got {mem_dim}")
        self.embed_dim = embed_dim
        self.mem_dim = mem_dim
        self.mask_stride = mask_stride

        layers: list[nn.Module] = []
        ch = 1
        n_down = mask_stride.bit_length() - 1
        for i in range(n_down):
            out = min(embed_dim, 16 * 4**i)
            layers += [nn.Conv2d(ch, out, kernel_size=3, stride=2, padding=1), LayerNorm2d(out), nn.GELU()]
            ch = out
        layers.append(nn.Conv2d(ch, embed_dim, kernel_size=1))
        self.mask_downsampler = nn.Sequential(*layers)
        self.pix_proj = nn.Conv2d(embed_dim, embed_dim, kernel_size=1)
        self.fuser = nn.Sequential(*[_ConvBlock(embed_dim, mlp_ratio) for _ in range(fuser_layers)])
        self.out_proj = nn.Conv2d(embed_dim, mem_dim, kernel_size=1)
        self.pointer_mlp = nn.Sequential(nn.Linear(token_dim, token_dim), nn.GELU(), nn.Linear(token_dim, mem_dim))

    def encode_pointer(self, decoder_token: Tensor) -> Tensor:
        """Object pointer from the decoder's mask output token.

        Args:
            decoder_token: ``(B, token_dim)``.

        Returns:
            ``(B, mem_dim)``.
        """
        if decoder_token.dim() != 2:
            raise ValueError(
                f"decoder_token must be (B, {self.pointer_mlp[0].in_features}), got shape {tuple(decoder_token.shape)}"
            )
        return self.pointer_mlp(decoder_token)

    def forward(
        self, image_embedding: Tensor, mask_logits: Tensor, decoder_token: Tensor | None = None
    ) -> MemoryEncoderOutput:
        """Encode one slice (batched).

        Args:
            image_embedding: ``(B, embed_dim, H, W)`` embedding of the slice (64x64 for LiteMedSAM).
            mask_logits: ``(B, 1, h, w)`` predicted mask logits (normally ``h = H * mask_stride``).
            decoder_token: optional ``(B, token_dim)`` decoder output token for the object pointer.

        Returns:
            :class:`MemoryEncoderOutput` with ``features``/``pos`` of shape ``(B, mem_dim, H, W)``.
        """
        if image_embedding.dim() != 4 or image_embedding.shape[1] != self.embed_dim:
            raise ValueError(f"image_embedding must be (B, {self.embed_dim}, H, W), got {tuple(image_embedding.shape)}")
        if mask_logits.dim() != 4 or mask_logits.shape[1] != 1 or mask_logits.shape[0] != image_embedding.shape[0]:
            raise ValueError(
                f"mask_logits must be (B, 1, h, w) with B={image_embedding.shape[0]}, got {tuple(mask_logits.shape)}"
            )
        B, _, H, W = image_embedding.shape
        target = (H * self.mask_stride, W * self.mask_stride)
        mask = torch.sigmoid(mask_logits.float())
        if tuple(mask.shape[-2:]) != target:
            mask = F.interpolate(mask, size=target, mode="bilinear", align_corners=False)
        mask = mask.to(image_embedding.dtype)
        x = self.pix_proj(image_embedding) + self.mask_downsampler(mask)
        x = self.fuser(x)
        features = self.out_proj(x)
        pos = sine_encoding_2d(H, W, self.mem_dim, device=features.device).to(features.dtype)
        pos = pos.unsqueeze(0).expand(B, -1, -1, -1)
        pointer = self.encode_pointer(decoder_token) if decoder_token is not None else None
        return MemoryEncoderOutput(features=features, pos=pos, pointer=pointer)
