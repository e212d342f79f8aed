"""CRISP-SAM2's mask refinement: an extra decoder output token whose mask is built from the semantics.

The refinement token goes through SAM's two-way transformer with the other output tokens; a hypernetwork
MLP turns its output into 32 weights that are dotted with a 4x upscaled projection of the cross-modal
semantics. The resulting mask logits are added to the SAM decoder's mask (``refined = sam + refinement``);
a learnable gain (initialised small) keeps the pretrained decoder's mask dominant at first.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from organsam.model.components.blocks import MLP, LayerNorm2d

__all__ = ["MaskRefinement"]


class MaskRefinement(nn.Module):
    """Refinement token and the mask it produces from cross-modal features.

    Args:
        dim: token width and semantics channels (256).
        feat_dim: channels of the upscaled semantics the token's weights are dotted with.
        init_gain: initial value of the output gain.

    Attributes:
        token: (1, dim) learned refinement token, to be appended to the decoder's output tokens.
    """

    def __init__(self, dim: int = 256, feat_dim: int = 32, init_gain: float = 0.1) -> None:
        super().__init__()
        self.token = nn.Embedding(1, dim)
        nn.init.normal_(self.token.weight, std=0.1)  # the scale of SAM's learned output tokens (norm ~2)
        self.upscale = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, feat_dim, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.hyper = MLP(dim, dim, feat_dim, 3)
        self.gain = nn.Parameter(torch.tensor(float(init_gain)))

    def forward(self, token_out: Tensor, semantics: Tensor) -> Tensor:
        """Refinement mask logits.

        Args:
            token_out: (P, dim) the refinement token after the decoder's transformer.
            semantics: (P, dim, 64, 64) cross-modal semantics of each prompt set.

        Returns:
            (P, 1, 256, 256) logits to add to the decoder's mask.
        """
        feats = self.upscale(semantics)
        P, C, H, W = feats.shape
        weights = self.hyper(token_out).to(feats.dtype)
        mask = (weights.unsqueeze(1) @ feats.reshape(P, C, H * W)).reshape(P, 1, H, W)
        return mask * self.gain.to(mask.dtype)
