"""PG-SAM's multi-level feature-fusion decoder: one mask token per organ, guide fused while upsampling.

SAM's mask decoder upsamples the transformer's image tokens 64 -> 128 -> 256 with two transposed
convolutions. This decoder runs those same (pretrained) layers stage by stage and, after each stage, adds
a fusion of (a) the prior guide (per-pixel organ probabilities from :class:`PriorAligner`, upsampled and
mixed with per-organ value vectors projected from the organ names) and (b) the image encoder's feature map
of that resolution (level 1 at 128x128, level 0 at 256x256), projected. The organ tokens (one per class)
leave the two-way transformer; a shared hypernetwork MLP turns each into 32 weights dotted with the fused
256x256 features, giving all organs' masks at once, and shared heads give each organ an IoU estimate and a
presence logit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from organsam.model.components.blocks import MLP

__all__ = ["MultiLevelFusionDecoder", "FusionOutput"]


@dataclass
class FusionOutput:
    """Output of :class:`MultiLevelFusionDecoder`.

    Attributes:
        masks: (P, K, 256, 256) mask logits of every organ token.
        iou: (P, K) predicted IoU per organ.
        class_logits: (P, K) presence logit per organ.
        features: (P, mask_dim, 256, 256) fused pixel features (for the mask optimizer).
    """

    masks: Tensor
    iou: Tensor
    class_logits: Tensor
    features: Tensor


class MultiLevelFusionDecoder(nn.Module):
    """Stage-wise upsampling with guide and encoder-level fusion, and per-organ mask/IoU/presence heads.

    Args:
        text_dim: width D of the organ-name embeddings.
        dim: token width (256).
        level_channels: channels of encoder levels 0 (256x256) and 1 (128x128).
        init_gain: initial per-channel gain of each fusion (small: pretrained upsampling dominates first).
    """

    def __init__(
        self, text_dim: int, dim: int = 256, level_channels: tuple[int, int] = (64, 128), init_gain: float = 0.1
    ) -> None:
        super().__init__()
        c128, c256 = dim // 4, dim // 8
        self.mask_dim = c256
        self.level1_proj = nn.Conv2d(level_channels[1], c128, 1)
        self.level0_proj = nn.Conv2d(level_channels[0], c256, 1)
        self.guide_values_128 = MLP(text_dim, dim, c128, 2)
        self.guide_values_256 = MLP(text_dim, dim, c256, 2)
        self.background_128 = nn.Parameter(torch.zeros(c128))
        self.background_256 = nn.Parameter(torch.zeros(c256))
        self.gain_128 = nn.Parameter(torch.full((c128,), float(init_gain)))
        self.gain_256 = nn.Parameter(torch.full((c256,), float(init_gain)))
        self.hyper = MLP(dim, dim, c256, 3)
        self.iou_head = MLP(dim, dim, 1, 3)
        self.class_head = MLP(dim, dim, 1, 2)

    def _guide(self, probs: Tensor, values: Tensor, background: Tensor, size: int) -> Tensor:
        p = F.interpolate(probs.float(), size=(size, size), mode="bilinear", align_corners=False)
        v = torch.cat([background.unsqueeze(0), values], dim=0).float()
        return torch.einsum("bkhw,kc->bchw", p, v)

    def forward(
        self,
        image_tokens: Tensor,
        organ_tokens: Tensor,
        upscaling: nn.Sequential,
        guide_probs: Tensor,
        names: Tensor,
        levels: list[Tensor],
    ) -> FusionOutput:
        """Decode all organs.

        Args:
            image_tokens: (P, dim, 64, 64) image tokens after the two-way transformer.
            organ_tokens: (P, K, dim) organ tokens after the two-way transformer.
            upscaling: SAM's ``output_upscaling`` (ConvT, LayerNorm2d, GELU, ConvT, GELU), used stage-wise.
            guide_probs: (P, K + 1, 64, 64) prior probabilities (background first).
            names: (K, D) organ-name embeddings.
            levels: encoder feature maps; ``levels[0]`` (P, 64, 256, 256), ``levels[1]`` (P, 128, 128, 128).

        Returns:
            :class:`FusionOutput`.
        """
        if len(upscaling) != 5:
            raise ValueError("upscaling must be SAM's output_upscaling (5 layers)")
        x = upscaling[2](upscaling[1](upscaling[0](image_tokens)))  # (P, 64, 128, 128)
        g128 = self._guide(guide_probs, self.guide_values_128(names), self.background_128, x.shape[-1])
        fuse = self.level1_proj(levels[1].to(x.dtype)).float() + g128
        x = x + (fuse * self.gain_128.float()[None, :, None, None]).to(x.dtype)
        x = upscaling[4](upscaling[3](x))  # (P, 32, 256, 256)
        g256 = self._guide(guide_probs, self.guide_values_256(names), self.background_256, x.shape[-1])
        fuse = self.level0_proj(levels[0].to(x.dtype)).float() + g256
        x = x + (fuse * self.gain_256.float()[None, :, None, None]).to(x.dtype)
        P, C, H, W = x.shape
        weights = self.hyper(organ_tokens).to(x.dtype)  # (P, K, C)
        masks = (weights @ x.reshape(P, C, H * W)).reshape(P, -1, H, W)
        iou = self.iou_head(organ_tokens).squeeze(-1)
        class_logits = self.class_head(organ_tokens).squeeze(-1)
        return FusionOutput(masks=masks, iou=iou, class_logits=class_logits, features=x)
