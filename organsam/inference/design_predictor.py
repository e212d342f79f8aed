"""Whole-volume inference with a trained design checkpoint (``organsam train`` output).

:func:`design_predictor` composes the :class:`~organsam.inference.volume_predictor.VolumePredictor` session API
(``init_state`` / ``add_text_prompt`` / ``add_box`` / ``add_points`` / ``propagate``) with a trained design
(``crisp_sam2``, ``seg_sam``, ``pg_sam``, ``unified``, ``organ_prompts``; see ``organsam designs``) as its
:class:`~organsam.inference.decoders.DesignDecoder`, in place of the plain LiteMedSAM core:

* every slice is encoded once with the design's encoder (``encode_plain``) and kept for all organs;
* each (slice, organ) job runs ``design(None, organ_index, boxes, points, encoded=...)``: the organ's text
  always, plus the box/points of the job;
* where the text places the organ: ``prompts="prior"`` (default) gives the design the location prior's box on
  each slice where the prior has the organ (as the shipped pipeline does for LiteMedSAM; designs trained with
  ``data.box_prompt_prob > 0`` know boxes), ``prompts="text"`` asks the design on every slice with the text
  alone (the designs' prompt-free promise; no atlas is registered: :class:`EverySlice` places each organ on
  every slice, without a box);
* a slice's mask is kept when the design's presence probability (its "is the organ on this slice" head; for
  ``organ_prompts`` the decoder's predicted IoU) is at least ``score_threshold``.

Track refinement (a LiteMedSAM box-tracking heuristic) is off: a design brings its own refinement.

    model = load_checkpoint("runs/organsam/model.safetensors")
    predictor = design_predictor(model, prompts="text")
    state = predictor.init_state(volume)
    predictor.add_text_prompt(state, "liver")
    for z, ids, masks in predictor.propagate(state): ...

``organsam.segment(..., design=NAME, checkpoint=PATH)`` and ``organsam segment --design NAME --checkpoint PATH``
build one.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from organsam.inference.decoders import DesignDecoder
from organsam.inference.volume_predictor import LocationPrior, VolumePredictor
from organsam.io import Volume
from organsam.model.base import OrganSegmenter

logger = logging.getLogger(__name__)

__all__ = ["EverySlice", "PROMPT_MODES", "design_predictor"]

#: Where a text-prompted organ is looked for: the location prior's boxes, or every slice by text alone.
PROMPT_MODES: tuple[str, str] = ("prior", "text")


class EverySlice:
    """The placement of text-only prompts: every organ on every slice, with no box (nothing is registered)."""

    class Fitted:
        def __init__(self, num_slices: int) -> None:
            self.num_slices = num_slices

        def present(self, organ_id: str) -> bool:
            return True

        def boxes(self, organ_id: str, margin_px: int = 0) -> dict[int, None]:
            return dict.fromkeys(range(self.num_slices))

    def fit(self, volume: Volume, spacing: tuple[float, float, float]) -> EverySlice.Fitted:
        return EverySlice.Fitted(int(volume.array.shape[0]))


def design_predictor(
    model: OrganSegmenter,
    *,
    prompts: str = "prior",
    prior: LocationPrior | str | None = "atlas",
    score_threshold: float = 0.5,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    decoder_precision: str | None = None,
    batch_size: int | None = None,
    **kwargs: Any,
) -> VolumePredictor:
    """A :class:`VolumePredictor` whose masks a trained design draws.

    Args:
        model: a trained design (:func:`organsam.model.checkpoint.load_checkpoint`).
        prompts: ``"prior"`` (text + the location prior's box on the slices where it has the organ) or
            ``"text"`` (text alone on every slice; no prior needed).
        prior: location prior for ``prompts="prior"`` (``"atlas"`` default; see :class:`VolumePredictor`).
        score_threshold: minimum presence probability for a slice mask to be kept.
        device: torch device.
        precision: encoder precision (default ``"bf16"`` on CUDA, ``"fp32"`` elsewhere); decoder_precision: the
            design's decoding precision (default ``precision``).
        batch_size: slices per encoder pass.
        **kwargs: other :class:`VolumePredictor` options (``box_margin_mm``, ``progress``, ...).
    """
    if prompts not in PROMPT_MODES:
        raise ValueError(f"prompts must be one of {PROMPT_MODES}, got {prompts!r}")
    for key in ("core", "organ_prompts", "track_refine", "trim_ends", "fast_encoder", "quantize", "decoder"):
        if key in kwargs:
            raise TypeError(f"a design predictor does not take {key!r}: the design brings its own core and prompts")
    dev = torch.device(device)
    precision = precision or ("bf16" if dev.type == "cuda" else "fp32")
    batch_size = int(batch_size if batch_size is not None else VolumePredictor.default_batch_size(dev))
    decoder = DesignDecoder(model, dev, precision, decoder_precision, batch_size)
    return VolumePredictor(
        prior=prior if prompts == "prior" else EverySlice(),
        device=dev,
        batch_size=batch_size,
        iou_threshold=score_threshold,
        track_refine=False,
        joint_assignment=False,
        anchor_refit=False,
        trim_ends=False,
        box_search=False,  # it ranks masks by LiteMedSAM's predicted IoU; a design scores presence
        expand_boxes=False,
        decoder=decoder,
        **kwargs,
    )  # the corrections rank slices by LiteMedSAM's predicted IoU
