"""Shape checks of what a design is given (prompts, loss targets, slice sequences): one-line errors that name the
expected shape."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from organsam.model.components.image_encoder import EncoderOutput
from organsam.model.design_types import DesignOutput
from organsam.model.sam_core import IMAGE_SIZE

__all__ = ["check_prompts", "check_targets", "sequence_length"]


def check_prompts(batch: int, boxes: Tensor | None, points: tuple[Tensor, Tensor] | None) -> None:
    """Boxes (B, 4) and points ((B, N, 2), (B, N)) of a batch of B prompts, or a one-line error."""
    if boxes is not None and tuple(boxes.shape) != (batch, 4):
        raise ValueError(f"boxes must be (B={batch}, 4) xyxy in the 256 model space, got {tuple(boxes.shape)}")
    if points is not None:
        coords, labels = points
        if coords.ndim != 3 or coords.shape[0] != batch or coords.shape[2] != 2 or labels.shape != coords.shape[:2]:
            raise ValueError(
                f"points must be (coords (B={batch}, N, 2), labels (B, N)), got "
                f"{tuple(coords.shape)} and {tuple(labels.shape)}"
            )


def check_targets(
    output: DesignOutput,
    target_masks: Tensor,
    present: Tensor,
    class_targets: Tensor | None,
    all_targets: Tensor | None,
    num_organs: int,
) -> None:
    """The loss targets' shapes against the output's batch and the design's K organs, or a one-line error."""
    B = output.masks.shape[0]
    if tuple(target_masks.shape) != (B, 1, IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"target_masks must be (B={B}, 1, {IMAGE_SIZE}, {IMAGE_SIZE}), got {tuple(target_masks.shape)}"
        )
    if tuple(present.shape) != (B,):
        raise ValueError(f"present must be (B={B},), got {tuple(present.shape)}")
    K = num_organs
    if class_targets is not None and tuple(class_targets.shape) != (B, K):
        raise ValueError(f"class_targets must be (B={B}, K={K}), got {tuple(class_targets.shape)}")
    if all_targets is not None and tuple(all_targets.shape) != (B, K, IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"all_targets must be (B={B}, K={K}, {IMAGE_SIZE}, {IMAGE_SIZE}), got {tuple(all_targets.shape)}"
        )


def sequence_length(images: Tensor | None, encoded: Sequence[EncoderOutput] | None, boxes: Tensor | None) -> int:
    """T of a slice sequence given as images (T, 3, 256, 256) or T encoder outputs, its boxes (T, B, 4) checked."""
    if encoded is not None:
        T = len(encoded)
    elif images is not None:
        if images.ndim != 4:
            raise ValueError(f"sequence images must be (T, 3, 256, 256), got {tuple(images.shape)}")
        T = images.shape[0]
    else:
        raise ValueError("pass images (T, 3, 256, 256) or encoded (T encoder outputs)")
    if boxes is not None and (boxes.ndim != 3 or boxes.shape[0] != T):
        raise ValueError(f"sequence boxes must be (T={T}, B, 4), got {tuple(boxes.shape)}")
    return T
