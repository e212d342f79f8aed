"""SAM prompt encoder: boxes and points to sparse tokens, a low-resolution mask to a dense embedding."""

from __future__ import annotations

import torch
from torch import nn

from organsam.model.components.blocks import LayerNorm2d
from organsam.model.components.position_encoding import RandomFourierPositionEncoding

__all__ = ["PromptEncoder", "POINT_BACKGROUND", "POINT_FOREGROUND", "POINT_PADDING"]

POINT_PADDING = -1
"""Point label of a padding point (ignored position, learned 'not a point' embedding)."""
POINT_BACKGROUND = 0
"""Point label of a negative click."""
POINT_FOREGROUND = 1
"""Point label of a positive click."""


class PromptEncoder(nn.Module):
    """Embed prompts for the mask decoder.

    Coordinates are in the model's input pixel space (``input_image_size``, 256x256 for LiteMedSAM), xy
    order, pixel centres at integer + 0.5 after the internal shift (as SAM does).

    Args:
        embed_dim: token / embedding channels (256).
        image_embedding_size: (h, w) of the image embedding (64, 64).
        input_image_size: (H, W) of the model input (256, 256).
        mask_in_chans: hidden channels of the mask downscaling network (16).
    """

    def __init__(
        self,
        embed_dim: int = 256,
        image_embedding_size: tuple[int, int] = (64, 64),
        input_image_size: tuple[int, int] = (256, 256),
        mask_in_chans: int = 16,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.pe_layer = RandomFourierPositionEncoding(embed_dim // 2)
        # 0: negative point, 1: positive point, 2: box top-left corner, 3: box bottom-right corner.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Position encoding of the image embedding grid, (1, embed_dim, h, w) float32."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """Embed clicks.

        Args:
            coords: (B, N, 2) xy pixel coordinates in the model input space.
            labels: (B, N) int labels (1 foreground, 0 background, -1 padding; 2/3 box corners).
            pad: append one padding point (SAM does so when no box is given).

        Returns:
            (B, N (+1), embed_dim) float32.
        """
        coords = coords.float() + 0.5
        if pad:
            coords = torch.cat([coords, coords.new_zeros(coords.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), POINT_PADDING)], dim=1)
        emb = self.pe_layer.forward_with_coords(coords, self.input_image_size)
        labels = labels[..., None]
        emb = torch.where(labels == POINT_PADDING, self.not_a_point_embed.weight.float(), emb)
        for k in range(4):
            emb = emb + (labels == k).float() * self.point_embeddings[k].weight.float()
        return emb

    def embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """Embed boxes as two corner tokens.

        Args:
            boxes: (B, 4) or (B, 1, 4) xyxy in the model input space.

        Returns:
            (B, 2, embed_dim) float32.
        """
        corners = (boxes.float() + 0.5).reshape(-1, 2, 2)
        emb = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_tokens = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight], dim=0)
        return emb + corner_tokens.float()

    def embed_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """(B, 1, 256, 256) mask logits -> (B, embed_dim, 64, 64) dense embedding."""
        return self.mask_downscaling(masks)

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        boxes: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed any combination of prompts.

        Args:
            points: (coords (B, N, 2), labels (B, N)) or None.
            boxes: (B, 4) xyxy or None.
            masks: (B, 1, 256, 256) mask logits or None.
            batch_size: B when no prompt is given (only the 'no mask' dense embedding is produced).

        Returns:
            sparse (B, T, embed_dim) with T = N (+1 padding when no box) + 2 per box, and
            dense (B, embed_dim, 64, 64).
        """
        if points is not None:
            bs = points[0].shape[0]
        elif boxes is not None:
            bs = boxes.shape[0]
        elif masks is not None:
            bs = masks.shape[0]
        elif batch_size is not None:
            bs = batch_size
        else:
            raise ValueError("PromptEncoder needs points, boxes, masks or an explicit batch_size")
        device = self.no_mask_embed.weight.device
        parts = [torch.empty(bs, 0, self.embed_dim, device=device)]
        if points is not None:
            parts.append(self.embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            parts.append(self.embed_boxes(boxes))
        sparse = torch.cat(parts, dim=1)
        if masks is not None:
            dense = self.embed_masks(masks)
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)
        return sparse, dense

    def check_mask_size(self, masks: torch.Tensor) -> None:
        """Raise ValueError unless ``masks`` is (B, 1, 256, 256)."""
        if masks.ndim != 4 or masks.shape[1] != 1 or tuple(masks.shape[2:]) != self.mask_input_size:
            raise ValueError(
                f"mask_input must be (B, 1, {self.mask_input_size[0]}, {self.mask_input_size[1]}) "
                f"logits, got {tuple(masks.shape)}"
            )
