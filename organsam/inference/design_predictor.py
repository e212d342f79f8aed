"""Whole-volume inference with a trained design checkpoint (``organsam train`` output).

:class:`DesignPredictor` is the :class:`~organsam.inference.volume_predictor.VolumePredictor` session API
(``init_state`` / ``add_text_prompt`` / ``add_box`` / ``add_points`` / ``propagate``) with a trained design
(``crisp_sam2``, ``seg_sam``, ``pg_sam``, ``organsam``, ``organ_prompts``; see ``organsam designs``) in place of
the plain LiteMedSAM core:

* every slice is encoded once with the design's encoder (``encode_plain``) and kept for all organs;
* each (slice, organ) job runs ``design(None, organ_index, boxes, points, encoded=...)``: the organ's text
  always, plus the box/points of the job;
* where the text places the organ: ``prompts="prior"`` (default) gives the design the location prior's box on
  each slice where the prior has the organ (as the shipped pipeline does for LiteMedSAM; designs trained with
  ``data.box_prompt_prob > 0`` know boxes), ``prompts="text"`` asks the design on every slice with the text
  alone (the designs' prompt-free promise; no prior is fitted);
* a slice's mask is kept when the design's presence probability (its "is the organ on this slice" head; for
  ``organ_prompts`` the decoder's predicted IoU) is at least ``score_threshold``.

Track refinement (a LiteMedSAM box-tracking heuristic) is off: a design brings its own refinement.

    model = load_checkpoint("runs/organsam/model.safetensors")
    predictor = DesignPredictor(model, prompts="text")
    state = predictor.init_state(volume)
    predictor.add_text_prompt(state, "liver")
    for z, ids, masks in predictor.propagate(state): ...

``organsam.segment(..., design=NAME, checkpoint=PATH)`` and ``organsam segment --design NAME --checkpoint PATH``
build one.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from organsam.inference.state import Box, InferenceState
from organsam.inference.volume_predictor import LocationPrior, VolumePredictor
from organsam.model.base import OrganSegmenter
from organsam.preprocessing.slices import to_model_input_batch

logger = logging.getLogger(__name__)

__all__ = ["DesignPredictor", "PROMPT_MODES"]

#: Where a text-prompted organ is looked for: the location prior's boxes, or every slice by text alone.
PROMPT_MODES: tuple[str, str] = ("prior", "text")


class DesignPredictor(VolumePredictor):
    """Text/box/point-prompted 3D segmentation with a trained design.

    Args:
        model: a trained design (:func:`organsam.model.checkpoint.load_checkpoint`).
        prompts: ``"prior"`` (text + the location prior's box on the slices where it has the organ) or
            ``"text"`` (text alone on every slice; no prior needed).
        prior: location prior for ``prompts="prior"`` (``"atlas"`` default; see :class:`VolumePredictor`).
        score_threshold: minimum presence probability for a slice mask to be kept.
        device: torch device.
        **kwargs: other :class:`VolumePredictor` options (``batch_size``, ``box_margin_mm``, ``progress``, ...).
    """

    def __init__(self, model: OrganSegmenter, *, prompts: str = "prior", prior: LocationPrior | str | None = "atlas",
                 score_threshold: float = 0.5, device: str | torch.device = "cpu", **kwargs: Any) -> None:
        if prompts not in PROMPT_MODES:
            raise ValueError(f"prompts must be one of {PROMPT_MODES}, got {prompts!r}")
        if not isinstance(model, OrganSegmenter):
            raise TypeError(f"model must be a design (OrganSegmenter), got {type(model).__name__}; load one with "
                            f"organsam.model.checkpoint.load_checkpoint")
        for key in ("core", "organ_prompts", "track_refine", "fast_encoder", "quantize"):
            if key in kwargs:
                raise TypeError(f"DesignPredictor does not take {key!r}: the design brings its own core and prompts")
        super().__init__(model.core, prior=prior if prompts == "prior" else None, device=device,
                         iou_threshold=score_threshold, track_refine=False, fast_encoder=False, **kwargs)
        self.model = model.to(self.device).eval()
        self.prompts = prompts

    # ------------------------------------------------------------------ prior
    def prior_boxes(self, state: InferenceState, organ_id: str) -> dict[int, Box]:
        """``prompts="prior"``: the prior's boxes; ``prompts="text"``: every slice, with no box (``None``)."""
        self.model.organ_index_of([organ_id])  # an organ outside the design's vocabulary fails here, named
        if self.prompts == "text":
            return dict.fromkeys(range(state.num_slices))  # type: ignore[arg-type]
        return super().prior_boxes(state, organ_id)

    # ------------------------------------------------------------------ model
    @torch.inference_mode()
    def encode_slices(self, state: InferenceState, slices: list[int]) -> list[Any]:
        """The design's encoder outputs (batch 1 each) of the given slices, encoded once and kept in the state."""
        missing = [z for z in slices if z not in state.embeddings]
        for i in range(0, len(missing), self.batch_size):
            chunk = missing[i:i + self.batch_size]
            t0 = time.perf_counter()
            imgs, _ = to_model_input_batch(state.intensities[chunk])
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                enc = self.model.encode_plain(torch.from_numpy(imgs).to(self.device))
            for k, z in enumerate(chunk):
                state.embeddings[z] = self.model.select_encoded(enc, k)
            self.encode_seconds += time.perf_counter() - t0
            self.encoded_slices += len(chunk)
        return [state.embeddings[z] for z in slices]

    @torch.inference_mode()
    def decode(self, state: InferenceState, jobs: list[tuple[int, str, Box | None, Any]]
               ) -> list[tuple[np.ndarray, float]]:
        """Run the design on (slice, organ, box, points) jobs; per job the (H, W) bool mask and its presence
        probability."""
        if not jobs:
            return []
        geom = state.geometry
        results: list[tuple[np.ndarray, float] | None] = [None] * len(jobs)
        groups: dict[tuple[int, bool, bool, int], list[int]] = {}
        for j, (z, _, box, pts) in enumerate(jobs):
            groups.setdefault((z, box is not None, pts is not None, 0 if pts is None else len(pts[0])), []).append(j)
        for (z, has_box, has_pts, _), idx in groups.items():
            (enc,) = self.encode_slices(state, [z])
            organ_index = self.model.organ_index_of([jobs[j][1] for j in idx]).to(self.device)
            boxes = points = None
            if has_box:
                boxes = torch.from_numpy(np.stack([geom.box_to_model(jobs[j][2]) for j in idx])
                                         ).float().to(self.device)
            if has_pts:
                coords = np.stack([geom.points_to_model(jobs[j][3][0]) for j in idx])
                labels = np.stack([jobs[j][3][1] for j in idx])
                points = (torch.from_numpy(coords).to(self.device), torch.from_numpy(labels).to(self.device))
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.decoder_precision == "bf16"):
                out = self.model(None, organ_index, boxes, points, encoded=enc)
            score = torch.sigmoid(out.presence_logit.float()).reshape(-1).cpu()
            masks = (geom.logits_to_original(out.masks.float())[:, 0] > 0).cpu().numpy()
            for k, j in enumerate(idx):
                results[j] = (masks[k], float(score[k]))
        return [r for r in results if r is not None]
