"""SAM mask decoder: output tokens + prompt tokens + image embedding -> mask logits and IoU estimates."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from organsam.model.components.blocks import MLP, LayerNorm2d
from organsam.model.components.two_way_transformer import TwoWayTransformer

__all__ = ["MaskDecoder"]


class MaskDecoder(nn.Module):
    """Predict masks from an image embedding and prompt embeddings.

    One IoU token and ``num_multimask_outputs + 1`` mask tokens are prepended to the prompt tokens; after
    the two-way transformer each mask token drives a hypernetwork MLP whose 32 outputs are dotted with the
    4x upscaled image features (64x64 -> 256x256).

    Args:
        transformer: the two-way transformer.
        transformer_dim: channels (256).
        num_multimask_outputs: masks in multimask mode (3); token 0 is the single-mask output.
        iou_head_depth: layers of the IoU MLP.
        iou_head_hidden_dim: hidden width of the IoU MLP.
    """

    def __init__(
        self,
        transformer: TwoWayTransformer,
        transformer_dim: int = 256,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        image_index: torch.Tensor | None = None,
        single_mask: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All mask tokens' outputs (or the single-mask output alone).

        Args:
            image_embeddings: (P, C, 64, 64) one embedding per prompt set (or (1, ...) shared by all); with
                ``image_index``, (I, C, 64, 64) distinct images.
            image_pe: (1, C, 64, 64) dense position encoding.
            sparse_prompt_embeddings: (P, T, C).
            dense_prompt_embeddings: (P, C, 64, 64); with ``image_index``, (1, C, 64, 64) shared by all.
            image_index: (P,) long, the image of each prompt set: the transformer's image-only first-layer
                projections are then computed once per image (same result to float rounding).
            single_mask: compute only the single-mask output, the way graph compilers run fastest
                (:meth:`_single_mask_head`; same logits to float rounding).

        Returns:
            masks (P, M, 256, 256) logits and iou (P, M); M = num_mask_tokens, or 1 with ``single_mask``.
        """
        P = sparse_prompt_embeddings.shape[0]
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat(
            [out_tokens.unsqueeze(0).expand(P, -1, -1).to(sparse_prompt_embeddings.dtype), sparse_prompt_embeddings],
            dim=1,
        )
        if image_index is not None:
            if dense_prompt_embeddings.shape[0] != 1:
                raise ValueError("with image_index the dense prompt embedding must be one (1, C, h, w) map")
            src, pos = image_embeddings + dense_prompt_embeddings, image_pe
        else:
            src = image_embeddings.expand(P, -1, -1, -1) + dense_prompt_embeddings
            pos = image_pe.expand(P, -1, -1, -1)
        hs, image_tokens = self.transformer(src, pos, tokens, image_index)  # image tokens (P, h * w, C)
        h, w = image_embeddings.shape[-2:]
        if single_mask:
            return self._single_mask_head(hs, image_tokens, h, w)
        iou_token_out = hs[:, 0]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens]
        upscaled = self.output_upscaling(image_tokens.transpose(1, 2).reshape(P, -1, h, w))
        hyper = torch.stack([mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        bu, cu, hu, wu = upscaled.shape
        masks = (hyper @ upscaled.reshape(bu, cu, hu * wu)).reshape(bu, -1, hu, wu)
        iou = self.iou_prediction_head(iou_token_out)
        return masks, iou

    def _single_mask_head(
        self, hs: torch.Tensor, image_tokens: torch.Tensor, h: int, w: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The single-mask output from the transformer's output tokens (P, Nt, C) and image tokens (P, h * w, C),
        rearranged for graph compilers (OpenVINO): the three multimask outputs are not computed, and the upscaling
        runs as matrix products over the channels of channels-last pixels. Each 2x2 stride-2 transposed convolution
        maps a pixel to a 2x2 block with no overlap, i.e. a (C_in, 4 C_out) matrix product; the layer norm and
        GELUs act per pixel, and the mask is the hypernetwork-weighted sum over the last channels, so the blocks
        are put in place only on the one-channel mask. Returns masks (P, 1, 4h, 4w) and iou (P, 1).
        """
        conv1, norm, _, conv2, _ = self.output_upscaling
        P, _, C = image_tokens.shape
        c1, c2 = conv1.out_channels, conv2.out_channels
        w1 = conv1.weight.permute(0, 2, 3, 1).reshape(C, 4 * c1)  # (C, [a, b, c1])
        y = (image_tokens @ w1 + conv1.bias.repeat(4)).reshape(P, h, w, 2, 2, c1)
        y = F.gelu(F.layer_norm(y, (c1,), norm.weight, norm.bias, norm.eps))
        w2 = conv2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)  # (c1, [a2, b2, c2])
        z = F.gelu((y @ w2 + conv2.bias.repeat(4)).reshape(P, h, w, 2, 2, 2, 2, c2))
        weights = self.output_hypernetworks_mlps[0](hs[:, 1])  # (P, c2)
        blocks = (z.reshape(P, -1, c2) @ weights[:, :, None]).reshape(P, h, w, 2, 2, 2, 2)  # (P, h, w, a, b, a2, b2)
        masks = blocks.permute(0, 1, 3, 5, 2, 4, 6).reshape(P, 1, 4 * h, 4 * w)
        return masks, self.iou_prediction_head(hs[:, 0])[:, :1]

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool = False,
        image_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict masks.

        Args:
            image_embeddings: (P, C, 64, 64) or (1, C, 64, 64) shared by all P prompt sets.
            image_pe: (1, C, 64, 64).
            sparse_prompt_embeddings: (P, T, C).
            dense_prompt_embeddings: (P, C, 64, 64).
            multimask_output: return the 3 multimask outputs instead of the single mask.
            image_index: see :meth:`predict_masks`.

        Returns:
            low-res mask logits (P, M, 256, 256) and predicted IoU (P, M), M = 3 if multimask else 1.
        """
        masks, iou = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, image_index
        )
        sel = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, sel], iou[:, sel]
