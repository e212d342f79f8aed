"""The Segment-Anything core (image encoder + prompt encoder + mask decoder) in the LiteMedSAM layout.

Model input space: 256x256 pixels. Images are (B, 3, 256, 256) float in [0, 1] (grey replicated to three
channels, per-image min-max scaled, zero padded bottom/right; see :mod:`organsam.preprocessing.slices`);
boxes and points are xy pixel coordinates in that space. Outputs are low-resolution mask logits
(…, 256, 256) in the same space.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from organsam.model.components.image_encoder import EncoderOutput, LevelResidualFn, TinyViT
from organsam.model.components.mask_decoder import MaskDecoder
from organsam.model.components.prompt_encoder import PromptEncoder
from organsam.model.components.two_way_transformer import TwoWayTransformer

logger = logging.getLogger(__name__)

__all__ = [
    "SamCore",
    "CheckpointError",
    "build_lite_medsam",
    "load_checkpoint_state",
    "IMAGE_SIZE",
    "EMBED_SIZE",
    "EMBED_DIM",
]

IMAGE_SIZE = 256
"""Side of the square model input."""
EMBED_SIZE = 64
"""Side of the image embedding grid."""
EMBED_DIM = 256
"""Channels of the image embedding and of prompt tokens."""


class CheckpointError(ValueError):
    """A checkpoint file cannot be read or does not fit the model."""


class SamCore(nn.Module):
    """Image encoder, prompt encoder and mask decoder with a typed encode/decode API.

    Args:
        image_encoder: TinyViT producing (B, 256, 64, 64).
        prompt_encoder: SAM prompt encoder for a 256x256 input and a 64x64 embedding.
        mask_decoder: SAM mask decoder.
    """

    def __init__(self, image_encoder: TinyViT, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    # ------------------------------------------------------------------ encoder
    def encode(
        self, images: torch.Tensor, level_residual_fn: LevelResidualFn | None = None, keep_levels: bool = True
    ) -> EncoderOutput:
        """Encode model-input images.

        Args:
            images: (B, 3, 256, 256) float in [0, 1] (no mean/std normalisation: LiteMedSAM has none).
            level_residual_fn: optional ``fn(level_index, feature) -> feature`` hook on each encoder stage's
                output; see :meth:`TinyViT.forward_features`.
            keep_levels: also return the per-stage feature maps.

        Returns:
            :class:`EncoderOutput`: ``embedding`` (B, 256, 64, 64) and ``levels``
            [(B, 64, 256, 256), (B, 128, 128, 128), (B, 160, 64, 64), (B, 320, 64, 64)].
        """
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(
                f"encode() expects images of shape (B, 3, {IMAGE_SIZE}, {IMAGE_SIZE}) in [0, 1], "
                f"got {tuple(images.shape)}; use organsam.preprocessing.slices.to_model_input"
            )
        return self.image_encoder.forward_features(images, level_residual_fn, keep_levels)

    def get_dense_pe(self) -> torch.Tensor:
        """Position encoding of the 64x64 embedding grid, (1, 256, 64, 64) float32."""
        return self.prompt_encoder.get_dense_pe()

    # ------------------------------------------------------------------ decoder
    def embed_prompts(
        self,
        boxes: torch.Tensor | None = None,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask_input: torch.Tensor | None = None,
        sparse_extra: torch.Tensor | None = None,
        dense_extra: torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse and dense prompt embeddings, with design-specific extras added.

        Args:
            boxes: (P, 4) xyxy in the 256 input space, or None.
            points: (coords (P, N, 2) xy in the 256 input space, labels (P, N): 1 fg, 0 bg, -1 pad), or None.
            mask_input: (P, 1, 256, 256) mask logits (e.g. a previous low-res prediction), or None.
            sparse_extra: (P, K, 256) extra prompt tokens appended after those of points/boxes (e.g. text).
            dense_extra: (P, 256, 64, 64) added to the dense embedding.
            batch_size: P when nothing else tells it.

        Returns:
            sparse (P, T, 256) and dense (P, 256, 64, 64).
        """
        P = _prompt_batch(boxes, points, mask_input, sparse_extra, dense_extra, batch_size)
        if boxes is not None:
            boxes = boxes.reshape(-1, 4)
            if boxes.shape[0] != P:
                raise ValueError(f"boxes must be (P, 4) with P={P}, got {tuple(boxes.shape)}")
        if points is not None:
            coords, labels = points
            if coords.ndim != 3 or coords.shape[-1] != 2 or tuple(labels.shape) != tuple(coords.shape[:2]):
                raise ValueError(
                    f"points must be (coords (P, N, 2), labels (P, N)), got "
                    f"{tuple(coords.shape)} and {tuple(labels.shape)}"
                )
        if mask_input is not None:
            self.prompt_encoder.check_mask_size(mask_input)
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=mask_input, batch_size=P)
        if sparse_extra is not None:
            if sparse_extra.ndim != 3 or sparse_extra.shape[0] != P or sparse_extra.shape[2] != EMBED_DIM:
                raise ValueError(f"sparse_extra must be (P={P}, K, {EMBED_DIM}), got {tuple(sparse_extra.shape)}")
            sparse = torch.cat([sparse.to(sparse_extra.dtype), sparse_extra], dim=1)
        if dense_extra is not None:
            if tuple(dense_extra.shape) != (P, EMBED_DIM, EMBED_SIZE, EMBED_SIZE):
                raise ValueError(
                    f"dense_extra must be (P={P}, {EMBED_DIM}, {EMBED_SIZE}, {EMBED_SIZE}), got "
                    f"{tuple(dense_extra.shape)}"
                )
            dense = dense + dense_extra
        return sparse, dense

    def decode(
        self,
        embedding: torch.Tensor,
        boxes: torch.Tensor | None = None,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = False,
        sparse_extra: torch.Tensor | None = None,
        dense_extra: torch.Tensor | None = None,
        image_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode P prompt sets against image embeddings.

        The p-th prompt set is decoded against ``embedding[image_index[p]]``. Without ``image_index``,
        ``embedding`` must hold one embedding per prompt set (B == P) or a single embedding shared by all
        (B == 1, broadcast without copying). To decode several organs of several slices in one call, pass
        e.g. ``image_index = torch.arange(B).repeat_interleave(organs_per_slice)``.

        Args:
            embedding: (B, 256, 64, 64) image embeddings from :meth:`encode`.
            boxes: (P, 4) xyxy boxes in the 256 input space, or None.
            points: (coords (P, N, 2), labels (P, N)) in the 256 input space, or None.
            mask_input: (P, 1, 256, 256) mask logits, or None.
            multimask_output: return SAM's 3 multimask outputs instead of the single mask.
            sparse_extra: (P, K, 256) extra sparse tokens (e.g. text embeddings), or None.
            dense_extra: (P, 256, 64, 64) extra dense embedding, or None.
            image_index: (P,) long, which embedding each prompt set uses, or None. Without a mask prompt or
                ``dense_extra``, the decoder's image-only first-layer projections are then computed once per
                embedding instead of once per prompt set (same masks to float rounding).

        Returns:
            low_res_logits (P, M, 256, 256) and iou_pred (P, M); M = 3 if ``multimask_output`` else 1.
        """
        if embedding.ndim != 4 or tuple(embedding.shape[1:]) != (EMBED_DIM, EMBED_SIZE, EMBED_SIZE):
            raise ValueError(
                f"embedding must be (B, {EMBED_DIM}, {EMBED_SIZE}, {EMBED_SIZE}), got {tuple(embedding.shape)}"
            )
        B = embedding.shape[0]
        fallback = int(image_index.shape[0]) if image_index is not None else B
        sparse, dense = self.embed_prompts(boxes, points, mask_input, sparse_extra, dense_extra, fallback)
        P = sparse.shape[0]
        if image_index is not None:
            if image_index.shape != (P,):
                raise ValueError(f"image_index must be (P={P},), got {tuple(image_index.shape)}")
            if mask_input is None and dense_extra is None:
                # the dense prompt is the same no-mask embedding for every prompt set: share the image side
                return self.mask_decoder(
                    embedding, self.get_dense_pe(), sparse, dense[:1], multimask_output, image_index=image_index.long()
                )
            embedding = embedding.expand(P, -1, -1, -1) if B == 1 else embedding[image_index.long()]
        elif B not in (1, P):
            raise ValueError(
                f"{B} image embeddings for {P} prompt sets: pass image_index (P,) to say which "
                f"embedding each prompt set uses"
            )
        return self.mask_decoder(embedding, self.get_dense_pe(), sparse, dense, multimask_output)

    def forward(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """LiteMedSAM's training forward: one box per image.

        Args:
            images: (B, 3, 256, 256) in [0, 1].
            boxes: (B, 4) xyxy in the 256 input space.

        Returns:
            (B, 1, 256, 256) mask logits.
        """
        emb = self.encode(images, keep_levels=False).embedding
        return self.decode(emb, boxes=boxes)[0]


def _prompt_batch(
    boxes: torch.Tensor | None,
    points: tuple[torch.Tensor, torch.Tensor] | None,
    mask_input: torch.Tensor | None,
    sparse_extra: torch.Tensor | None,
    dense_extra: torch.Tensor | None,
    batch_size: int | None,
) -> int:
    if boxes is not None:
        return int(boxes.reshape(-1, 4).shape[0])
    if points is not None:
        return int(points[0].shape[0])
    for t in (mask_input, sparse_extra, dense_extra):
        if t is not None:
            return int(t.shape[0])
    if batch_size is None:
        raise ValueError("no prompt given and no batch size: pass boxes, points, mask_input or an extra embedding")
    return batch_size


def load_checkpoint_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a LiteMedSAM-layout state dict (a plain state dict, or one under ``model``/``state_dict``).

    Args:
        path: a ``.pth`` file saved with ``torch.save``.

    Returns:
        The state dict.

    Raises:
        CheckpointError: the file cannot be read safely (``weights_only``) or holds no state dict.
    """
    p = Path(path)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(
            f"{p}: cannot read as a torch weights file ({first}); pass a LiteMedSAM .pth "
            f"state dict saved with torch.save(model.state_dict(), path)"
        ) from e
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{p}: does not hold a state dict of tensors; pass a LiteMedSAM .pth state dict")
    return obj


def build_lite_medsam(checkpoint: str | os.PathLike[str] | None = None, pretrained: bool = True) -> SamCore:
    """Build the LiteMedSAM architecture and (optionally) load its weights, strictly.

    Args:
        checkpoint: a .pth state dict in the LiteMedSAM layout (e.g. a fine-tuned one). Default: the
            LiteMedSAM release found by ``organsam.weights.find_weight("lite_medsam")`` (hash checked).
        pretrained: load weights; ``False`` gives a randomly initialised model (``checkpoint`` ignored).

    Returns:
        The model in eval mode, on CPU, float32.

    Raises:
        organsam.weights.WeightsError: the default weight file is missing or corrupt.
        CheckpointError: the checkpoint does not load with ``strict=True``.
    """
    model = SamCore(
        image_encoder=TinyViT(
            in_channels=3,
            embed_dims=(64, 128, 160, 320),
            depths=(2, 2, 6, 2),
            num_heads=(2, 4, 5, 10),
            window_sizes=(7, 7, 14, 7),
            mlp_ratio=4.0,
            mbconv_expand_ratio=4.0,
            out_channels=EMBED_DIM,
        ),
        prompt_encoder=PromptEncoder(EMBED_DIM, (EMBED_SIZE, EMBED_SIZE), (IMAGE_SIZE, IMAGE_SIZE), 16),
        mask_decoder=MaskDecoder(
            TwoWayTransformer(depth=2, embed_dim=EMBED_DIM, num_heads=8, mlp_dim=2048),
            transformer_dim=EMBED_DIM,
            num_multimask_outputs=3,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
    )
    if pretrained:
        from organsam.weights import find_weight

        path = find_weight("lite_medsam", checkpoint, check_hash=checkpoint is None)
        state = load_checkpoint_state(path)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise CheckpointError(
                f"{path}: does not fit the LiteMedSAM architecture ({e}); pass a checkpoint "
                f"saved from organsam's SamCore or the original LiteMedSAM"
            ) from e
        logger.info("loaded LiteMedSAM weights from %s", path)
    return model.eval()
