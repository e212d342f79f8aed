"""A SAM2-video-predictor-shaped session API over a 3D volume.

    predictor = VolumePredictor()
    state = predictor.init_state(volume)
    predictor.add_text_prompt(state, "liver and both kidneys")
    predictor.add_box(state, "liver", slice_index=40, box=(120, 80, 300, 260))   # optional correction
    for z, organ_ids, masks in predictor.propagate(state):
        ...

Where a text-prompted organ gets its location from: a location prior (by default the atlas prior of
``organsam.priors``, which registers a labelled CT onto the volume and turns each warped organ mask
into per-slice boxes). Organs prompted only by a box or points on some slices are tracked from those
slices through the volume: each next slice is prompted with the box of the previous slice's mask.
A slice's mask is rejected (the organ is judged absent there) when the decoder's predicted IoU falls
below ``iou_threshold``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from organsam.inference.fast_encoder import PRECISIONS, FastImageEncoder
from organsam.inference.organ_prompt_table import OrganPromptTable, load_prompt_table
from organsam.inference.state import Box, InferenceState, OrganPrompt, OrganResult
from organsam.inference.track_refine import TrackRefiner, widen_cut_boxes
from organsam.io import Volume
from organsam.model.components.image_encoder import TinyViT
from organsam.model.sam_core import SamCore, build_lite_medsam
from organsam.preprocessing.intensity import model_intensities
from organsam.preprocessing.slices import geometry_for, to_model_input_batch
from organsam.priors.boxes import box_of_slice
from organsam.vocabulary import load_vocabulary, parse_prompt

logger = logging.getLogger(__name__)

__all__ = ["VolumePredictor", "LocationPrior"]


class LocationPrior(Protocol):
    """Something that, fitted on a volume, says where each organ is (per-slice boxes)."""

    def fit(self, array: np.ndarray, spacing: tuple[float, float, float]) -> Any:
        """Fit on a (Z, Y, X) HU array; returns an object with ``boxes(organ_id, margin_px)`` and
        ``present(organ_id)``."""
        ...


class VolumePredictor:
    """Text/box/point-prompted 3D segmentation with a SAM core.

    Args:
        core: the SAM core (default: LiteMedSAM weights, hash-checked).
        prior: location prior for text prompts; ``"atlas"`` builds the default atlas prior lazily,
            ``None`` disables text-only prompts (box/point prompts still work).
        device: torch device.
        batch_size: slices encoded per forward pass (default :meth:`default_batch_size`).
        iou_threshold: minimum predicted IoU for a slice mask to be kept.
        box_margin_mm: margin added around prior boxes (mm, converted to pixels per axis).
        track_margin_px: margin around the previous slice's mask box when tracking.
        progress: show a progress bar.
        precision: compute precision of the image encoder and the mask decoder, ``"fp32"`` or ``"bf16"``
            (bfloat16 autocast: 2-3x faster encoding on CPUs with AVX512-BF16/AMX and on GPUs; masks differ
            slightly: golden-protocol Dice within 0.005 on the 8 large organs, up to 0.03 on the adrenal
            glands). Default: ``"bf16"`` on CUDA, ``"fp32"`` elsewhere.
        fast_encoder: encode with :class:`organsam.inference.fast_encoder.FastImageEncoder` (batch norms
            folded, channels-last; same embeddings to float rounding) when the core's encoder is a TinyViT.
            It copies the encoder's weights on first use: build a new predictor after changing them.
            ``False`` calls ``core.encode`` as is.
        quantize: dynamic int8 linear layers in the encoder's attention stages (CPU; approximate; needs
            ``fast_encoder``).
        decoder_precision: precision of the mask decoder alone (default: ``precision``).
        track_refine: widen prior boxes whose mask touches a box side, and after the prior pass follow each
            text-prompted organ from its most confident slice, keeping the better of the prior's and the
            tracked mask per slice (:class:`organsam.inference.track_refine.TrackRefiner`); ``False`` keeps
            the plain prior pass.
        organ_prompts: learned organ prompt tokens appended to every box prompt of an organ the table holds
            (:mod:`organsam.inference.organ_prompt_table`): ``True`` the packaged table (trained on
            ``../shared/data``, SHA-256 checked), a path to another exported table, a ready
            :class:`OrganPromptTable`, or ``False``/``None`` (default) for plain LiteMedSAM box prompts.
    """

    def __init__(self, core: SamCore | None = None, *, prior: LocationPrior | str | None = "atlas",
                 device: str | torch.device = "cpu", batch_size: int | None = None, iou_threshold: float = 0.5,
                 box_margin_mm: float = 8.0, track_margin_px: int = 3, progress: bool = True,
                 precision: str | None = None, fast_encoder: bool = True, quantize: bool = False,
                 track_refine: bool = True, decoder_precision: str | None = None,
                 organ_prompts: OrganPromptTable | str | bool | None = False) -> None:
        self.device = torch.device(device)
        self.core = (core if core is not None else build_lite_medsam()).to(self.device).eval()
        if precision is None:
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        if decoder_precision is None:
            decoder_precision = precision
        for name, value in (("precision", precision), ("decoder_precision", decoder_precision)):
            if value not in PRECISIONS:
                raise ValueError(f"{name} must be one of {PRECISIONS}, got {value!r}")
        if quantize and not fast_encoder:
            raise ValueError("quantize=True needs fast_encoder=True")
        self.precision = precision
        self.decoder_precision = decoder_precision
        self.fast_encoder = bool(fast_encoder)
        self.quantize = bool(quantize)
        self._fast: FastImageEncoder | None = None
        self.encode_seconds = 0.0
        self._prior = prior
        self.batch_size = int(batch_size if batch_size is not None else self.default_batch_size(self.device))
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.iou_threshold = float(iou_threshold)
        self.box_margin_mm = float(box_margin_mm)
        self.track_margin_px = int(track_margin_px)
        self.progress = progress
        self.track_refine = bool(track_refine)
        self.encoded_slices = 0
        self.refine_decodes = 0
        if organ_prompts is True:
            organ_prompts = load_prompt_table()
        elif isinstance(organ_prompts, (str, os.PathLike)):
            organ_prompts = load_prompt_table(organ_prompts)
        self.organ_prompts: OrganPromptTable | None = organ_prompts or None

    @staticmethod
    def default_batch_size(device: str | torch.device) -> int:
        """Slices per encoder pass that ran fastest in ``bench/encoder_speed.py``: small batches on CPU
        (the 256x256 stages' activations stay in cache; peak memory stays low), large ones on GPU."""
        return 32 if torch.device(device).type == "cuda" else 1

    # ------------------------------------------------------------------ session
    def init_state(self, volume: Volume) -> InferenceState:
        """Prepare a volume: intensities for the model and the slice geometry (no model work yet)."""
        if volume.array.ndim != 3 or min(volume.array.shape) < 1:
            raise ValueError(f"{volume.path or 'volume'}: expected a 3D (Z, Y, X) volume, got {volume.array.shape}")
        return InferenceState(volume=volume, intensities=model_intensities(volume),
                              geometry=geometry_for(volume.array.shape[1:]))

    def add_text_prompt(self, state: InferenceState, text: str) -> list[str]:
        """Resolve free text (or a vocabulary id) to organ ids and add them; returns the ids (raises on unknown
        terms)."""
        ids = [text] if text in load_vocabulary() else parse_prompt(text)
        for oid in ids:
            state.prompts.setdefault(oid, OrganPrompt(oid, text=text))
            state.results.pop(oid, None)
        return ids

    def _organ(self, state: InferenceState, organ: str) -> OrganPrompt:
        oid = organ if organ in load_vocabulary() else parse_prompt(organ)[0]
        state.results.pop(oid, None)
        return state.prompts.setdefault(oid, OrganPrompt(oid))

    def _check_slice(self, state: InferenceState, slice_index: int) -> int:
        z = int(slice_index)
        if not 0 <= z < state.num_slices:
            raise ValueError(f"slice index {z} out of range: the volume has {state.num_slices} slices")
        return z

    def add_box(self, state: InferenceState, organ: str, slice_index: int, box: Box) -> None:
        """Box prompt (x0, y0, x1, y1) in the slice's pixels (x = column of the canonical slice)."""
        z = self._check_slice(state, slice_index)
        x0, y0, x1, y1 = (float(v) for v in box)
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f"box must be (x0, y0, x1, y1) with x1 > x0 and y1 > y0, got {box}")
        self._organ(state, organ).boxes[z] = (x0, y0, x1, y1)

    def add_points(self, state: InferenceState, organ: str, slice_index: int, points: np.ndarray,
                   labels: np.ndarray) -> None:
        """Point prompts on one slice: ``points`` (N, 2) xy pixels, ``labels`` (N,) 1 = inside, 0 = outside."""
        z = self._check_slice(state, slice_index)
        pts = np.asarray(points, dtype=np.float32).reshape(-1, 2)
        lab = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(pts) != len(lab) or len(pts) == 0:
            raise ValueError(f"points {pts.shape} and labels {lab.shape} must be non-empty and of equal length")
        self._organ(state, organ).points[z] = (pts, lab)

    def reset(self, state: InferenceState) -> None:
        """Forget prompts and results (embeddings are kept)."""
        state.prompts.clear()
        state.results.clear()

    # ------------------------------------------------------------------ prior
    def fit_prior(self, state: InferenceState) -> Any:
        """Fit the location prior on the session's volume once (kept in ``state.prior``); None without a prior."""
        if state.prior is None and self._prior is not None:
            prior = self._prior
            if prior == "atlas":
                from organsam.priors import AtlasPrior, default_atlas

                prior = self._prior = AtlasPrior(default_atlas())
            logger.info("fitting the location prior")
            state.prior = prior.fit(state.volume.array, tuple(state.volume.spacing))
        return state.prior

    def prior_boxes(self, state: InferenceState, organ_id: str) -> dict[int, Box]:
        """The prior's per-slice boxes of an organ, widened by ``box_margin_mm`` ({} when the prior lacks it)."""
        fitted = self.fit_prior(state)
        if fitted is None:
            raise ValueError(f"organ {organ_id!r} has only a text prompt and no location prior is configured: "
                             f"give a box (add_box) or use the atlas prior")
        if not fitted.present(organ_id):
            logger.warning("%s: not in the location prior's atlas; give a box to segment it", organ_id)
            return {}
        margin = self.margin_px(state)
        return {int(z): tuple(float(v) for v in b) for z, b in fitted.boxes(organ_id, margin_px=margin).items()}

    def margin_px(self, state: InferenceState) -> int:
        """``box_margin_mm`` in pixels of the session's slices (finest in-plane spacing)."""
        sy, sx = state.volume.spacing[1], state.volume.spacing[2]
        return int(round(self.box_margin_mm / min(sy, sx)))

    # ------------------------------------------------------------------ model
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings with this predictor's encoder settings.

        Args:
            images: (B, 3, 256, 256) float in [0, 1] on the predictor's device.

        Returns:
            (B, 256, 64, 64) float32 embeddings.
        """
        use_fast = self.fast_encoder and isinstance(self.core.image_encoder, TinyViT)
        if use_fast:
            if self._fast is None:
                self._fast = FastImageEncoder(self.core.image_encoder, precision=self.precision,
                                              quantize=self.quantize and self.device.type == "cpu",
                                              channels_last=True).to(self.device)
            return self._fast(images)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                    enabled=self.precision == "bf16"):
            return self.core.encode(images, keep_levels=False).embedding.float()

    @torch.inference_mode()
    def encode_slices(self, state: InferenceState, slices: list[int]) -> torch.Tensor:
        """(len(slices), 256, 64, 64) embeddings of the given slices; the ones not yet in ``state.embeddings``
        are encoded (in batches of ``batch_size``) and kept there."""
        missing = [z for z in slices if z not in state.embeddings]
        for i in range(0, len(missing), self.batch_size):
            chunk = missing[i:i + self.batch_size]
            t0 = time.perf_counter()
            imgs, _ = to_model_input_batch(state.intensities[chunk])
            emb = self.encode_images(torch.from_numpy(imgs).to(self.device))
            for z, e in zip(chunk, emb):
                state.embeddings[z] = e
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.encode_seconds += time.perf_counter() - t0
            self.encoded_slices += len(chunk)
        return torch.stack([state.embeddings[z] for z in slices])

    @torch.inference_mode()
    def decode(self, state: InferenceState, jobs: list[tuple[int, str, Box | None, Any]]
               ) -> list[tuple[np.ndarray, float]]:
        """Decode (slice, organ, box, points) jobs; returns per job (H, W) bool mask and predicted IoU."""
        if not jobs:
            return []
        slices = sorted({z for z, *_ in jobs})
        emb = self.encode_slices(state, slices)
        pos = {z: i for i, z in enumerate(slices)}
        geom = state.geometry
        out: list[tuple[np.ndarray, float]] = []
        table = self.organ_prompts
        groups: dict[tuple[bool, bool, int, bool], list[int]] = {}
        for j, (_, organ, box, pts) in enumerate(jobs):
            npts = 0 if pts is None else len(pts[0])
            tokens = table is not None and box is not None and pts is None and organ in table
            groups.setdefault((box is not None, pts is not None, npts, tokens), []).append(j)
        results: list[tuple[np.ndarray, float] | None] = [None] * len(jobs)
        for (has_box, has_pts, _, tokens), idx in groups.items():
            image_index = torch.tensor([pos[jobs[j][0]] for j in idx], device=self.device)
            boxes = points = extra = None
            if tokens:
                assert table is not None
                extra = table.lookup([jobs[j][1] for j in idx], self.device)
            if has_box:
                boxes = torch.from_numpy(np.stack([geom.box_to_model(jobs[j][2]) for j in idx])).to(self.device)
            if has_pts:
                coords = np.stack([geom.points_to_model(jobs[j][3][0]) for j in idx])
                labels = np.stack([jobs[j][3][1] for j in idx])
                points = (torch.from_numpy(coords).to(self.device), torch.from_numpy(labels).to(self.device))
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.decoder_precision == "bf16"):
                logits, iou = self.core.decode(emb, boxes=boxes, points=points, sparse_extra=extra,
                                                 image_index=image_index)
            full = geom.logits_to_original(logits.float())
            masks = (full[:, 0] > 0).cpu().numpy()
            for k, j in enumerate(idx):
                results[j] = (masks[k], float(iou[k, 0]))
        out = [r for r in results if r is not None]
        return out

    # ------------------------------------------------------------------ propagation
    def propagate(self, state: InferenceState, reverse: bool = False
                  ) -> Iterator[tuple[int, list[str], np.ndarray]]:
        """Segment every prompted organ through the volume.

        Organs with a text prompt are placed by the location prior (a box per slice where the prior
        has the organ; a user box on a slice overrides it), then, with ``track_refine``, corrected by
        tracking from their most confident slice. Organs with only box/point prompts are tracked from
        their prompted slices, forward then backward. Masks are yielded once every slice is final.

        Args:
            state: the session.
            reverse: iterate from the last slice to the first.

        Yields:
            (slice index, organ ids segmented on it, (n, Y, X) bool masks), in slice order.
        """
        if not state.prompts:
            raise ValueError("no prompt given: call add_text_prompt, add_box or add_points first")
        Z, Y, X = state.volume.array.shape
        planned: dict[str, dict[int, Box]] = {}
        tracked: list[str] = []
        for oid, p in state.prompts.items():
            state.results[oid] = OrganResult(mask=np.zeros((Z, Y, X), dtype=bool))
            if p.text is not None:
                planned[oid] = {**self.prior_boxes(state, oid), **p.boxes}
                state.results[oid].source = "prior" + ("+box" if p.boxes else "")
            else:
                tracked.append(oid)
                state.results[oid].source = "track"
        order = range(Z - 1, -1, -1) if reverse else range(Z)
        needed = {z for boxes in planned.values() for z in boxes}
        for oid in tracked:
            needed |= set(state.prompts[oid].boxes) | set(state.prompts[oid].points)
        bar = tqdm(total=Z, desc="segmenting", unit="slice", disable=not self.progress, leave=False)
        done: dict[str, set[int]] = {oid: set() for oid in tracked}
        for direction in ((order,) if not tracked else (order, order[::-1])):
            for z in direction:
                jobs: list[tuple[int, str, Box | None, Any]] = []
                for oid, boxes in planned.items():
                    if direction is order and z in boxes:
                        jobs.append((z, oid, boxes[z], state.prompts[oid].points.get(z)))
                step = -1 if direction.step == -1 else 1
                for oid in tracked:
                    if z in done[oid]:
                        continue
                    p = state.prompts[oid]
                    box: Box | None = p.boxes.get(z)
                    prev = z - step
                    if box is None and z not in p.points and 0 <= prev < Z and state.results[oid].mask[prev].any():
                        b = box_of_slice(state.results[oid].mask[prev], self.track_margin_px)
                        box = tuple(float(v) for v in b) if b is not None else None
                    if box is not None or z in p.points:
                        jobs.append((z, oid, box, p.points.get(z)))
                if not jobs:
                    if direction is order:
                        bar.update(1)
                    continue
                self._prefetch(state, z, direction, needed)
                decoded = self.decode(state, jobs)
                if self.track_refine:
                    decoded = widen_cut_boxes(state, jobs, decoded, self.decode, self.margin_px(state))
                for (_, oid, _, _), (m, iou) in zip(jobs, decoded):
                    res = state.results[oid]
                    if oid in done:
                        done[oid].add(z)
                    user = z in state.prompts[oid].boxes or z in state.prompts[oid].points
                    if (iou < self.iou_threshold and not user) or not m.any():
                        res.rejected[z] = iou
                        continue
                    res.mask[z] = m
                    res.slice_scores[z] = iou
                if direction is order:
                    bar.update(1)
        bar.close()
        if self.track_refine and planned:
            refiner = TrackRefiner(iou_threshold=self.iou_threshold)
            refiner.refine(state, planned, self.decode, self.margin_px(state))
            self.refine_decodes += refiner.decodes
        for z in order:
            ids = [oid for oid, res in state.results.items() if res.mask[z].any()]
            if ids:
                yield z, ids, np.stack([state.results[oid].mask[z] for oid in ids])

    def _prefetch(self, state: InferenceState, z: int, direction: range, needed: set[int]) -> None:
        """Encode ``z`` together with the next needed slices in the direction of travel (one batch)."""
        if z in state.embeddings:
            return
        seq = list(direction)
        i = seq.index(z)
        ahead = [s for s in seq[i:] if (s in needed or s == z) and s not in state.embeddings]
        self.encode_slices(state, ahead[: self.batch_size])
