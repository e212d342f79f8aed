"""A SAM2-video-predictor-shaped session API over a 3D volume.

    predictor = VolumePredictor()
    state = predictor.init_state(volume)
    predictor.add_text_prompt(state, "liver and both kidneys")
    predictor.add_box(state, "liver", slice_index=40, box=(120, 80, 300, 260))   # optional correction
    for z, organ_ids, masks in predictor.propagate(state):
        ...

What draws the masks is a :class:`~organsam.inference.decoders.SliceDecoder` composed into the predictor: the
LiteMedSAM core by default (:class:`~organsam.inference.decoders.SamCoreDecoder`), or a trained research design
(:class:`~organsam.inference.decoders.DesignDecoder`, see :func:`organsam.inference.design_predictor.design_predictor`).

Where a text-prompted organ gets its location from: a location prior (by default the atlas prior of
``organsam.priors``: a labelled CT registered onto the volume, each warped organ mask turned into per-slice boxes),
moved onto the anchor organs where they show it is off (:mod:`organsam.inference.anchor_refit`). Organs prompted
only by a box or points are tracked from those slices: each next slice gets the box of the previous slice's mask.
A slice's mask is rejected (organ judged absent there) when the predicted IoU falls below ``iou_threshold``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from organsam.inference.anatomical_order import assign_by_order, posterior_to
from organsam.inference.anchor_refit import move_prior, search_offset, z_offset
from organsam.inference.assignment import ANCHORS, assign_against_anchors
from organsam.inference.box_expansion import expand_off_anchors
from organsam.inference.box_search import search_boxes
from organsam.inference.decoders import SamCoreDecoder, SliceDecoder
from organsam.inference.hidden_organs import hidden_organs
from organsam.inference.organ_ends import trim_prior_placed
from organsam.inference.organ_prompt_table import OrganPromptTable
from organsam.inference.prompt_session import PromptSession
from organsam.inference.state import (
    Box,
    Candidate,
    DecodeJob,
    FittedPrior,
    InferenceState,
    LocationPrior,
    OrganPrompt,
    OrganResult,
)
from organsam.inference.track_refine import TrackRefiner, widen_cut_boxes
from organsam.io import Volume
from organsam.model.sam_core import SamCore, build_lite_medsam
from organsam.preprocessing.intensity import model_intensities
from organsam.preprocessing.slices import geometry_for
from organsam.priors.boxes import box_of_slice

logger = logging.getLogger(__name__)

__all__ = ["FittedPrior", "LocationPrior", "VolumePredictor"]  # the prior protocols live in state.py


class VolumePredictor(PromptSession):
    """Text/box/point-prompted 3D segmentation with a SAM core (or a trained design, through ``decoder``).

    Args:
        core: the SAM core (default: LiteMedSAM weights, hash-checked); not with ``decoder``.
        prior: location prior for text prompts; ``"atlas"`` builds the default atlas prior lazily,
            ``None`` disables text-only prompts (box/point prompts still work).
        device: torch device.
        batch_size: slices encoded per forward pass (default :meth:`default_batch_size`).
        iou_threshold: minimum predicted IoU for a slice mask to be kept. box_margin_mm: margin around prior boxes (mm).
        track_margin_px: margin around the previous slice's mask box when tracking. progress: show a progress bar.
        precision: of the encoder and decoder, ``"fp32"`` or ``"bf16"`` (about 2x faster on AVX512-BF16 CPUs and GPUs;
            lower Dice on the AMOS slabs: README "Speed"); default ``"bf16"`` on CUDA, ``"fp32"`` elsewhere.
        fast_encoder: encode with :class:`organsam.model.components.fast_image_encoder.FastImageEncoder` (batch norms
            folded, channels-last; same embeddings to float rounding) when the core's encoder is a TinyViT.
            It copies the encoder's weights on first use: build a new predictor after changing them.
            ``False`` calls ``core.encode`` as is.
        quantize: dynamic int8 linear layers in the encoder's attention stages (CPU; approximate; ``fast_encoder``).
        decoder_precision: precision of the mask decoder alone (default: ``precision``).
        track_refine: widen prior boxes whose mask touches a box side, and after the prior pass follow each
            text-prompted organ from its most confident slice, keeping the better of the prior's and the
            tracked mask per slice (:class:`organsam.inference.track_refine.TrackRefiner`); ``False`` keeps
            the plain prior pass.
        joint_assignment: decode again, without the anchor, the slices where a text-prompted organ was drawn
            mostly inside an anchor organ's mask (liver, spleen, kidneys, aorta;
            :mod:`organsam.inference.assignment`); ``False`` keeps such masks.
        shared_structures: two other organs on one structure: one gives it up (:mod:`~.shared_structures`).
        anatomical_order: an organ drawn on an organ it lies behind (the IVC on the pancreatic head) is decoded
            again without it (:mod:`organsam.inference.anatomical_order`); ``False`` keeps such masks.
        organ_prompts: learned organ prompt tokens appended to every box prompt of an organ the table holds
            (:mod:`organsam.inference.organ_prompt_table`): ``True`` the packaged table (trained on
            ``../shared/data``, SHA-256 checked), a path to another exported table, a ready
            :class:`OrganPromptTable`, or ``False``/``None`` (default) for plain LiteMedSAM box prompts.
        anchor_refit: when the anchor organs drawn sit away from the prior's boxes, move the prior onto them and
            segment the text-prompted organs again (:mod:`organsam.inference.anchor_refit`); ``False`` keeps
            the prior where registration put it.
        trim_ends: cut a text-prompted organ's end slices that hold another tissue
            (:mod:`organsam.inference.organ_ends`); ``False`` keeps them.
        box_search: decode each prior box again with its sides pulled in and keep the mask with the highest
            predicted IoU (:mod:`organsam.inference.box_search`); ``None`` (default): on MR volumes only.
        runtime: what runs the core: ``"auto"`` (OpenVINO on the CPU where it is installed, same masks to float
            rounding, faster; else PyTorch), ``"torch"`` or ``"openvino"`` (``organsam.inference.runtimes``).
        expand_boxes: on CT, decode the prior boxes of organs that are not anchors again with sides pushed out,
            keeping the surest mask off the anchors (:mod:`organsam.inference.box_expansion`); ``False``: as placed.
        decoder: what encodes slices and draws masks; default a :class:`SamCoreDecoder` built from ``core``,
            ``precision``, ``decoder_precision``, ``fast_encoder``, ``quantize``, ``organ_prompts`` and ``runtime``
            (which must then be left at their defaults).
    """

    def __init__(
        self,
        core: SamCore | None = None,
        *,
        prior: LocationPrior | str | None = "atlas",
        device: str | torch.device = "cpu",
        batch_size: int | None = None,
        iou_threshold: float = 0.5,
        box_margin_mm: float = 8.0,
        track_margin_px: int = 3,
        progress: bool = True,
        precision: str | None = None,
        fast_encoder: bool = True,
        quantize: bool = False,
        track_refine: bool = True,
        decoder_precision: str | None = None,
        joint_assignment: bool = True,
        organ_prompts: OrganPromptTable | str | bool | None = False,
        decoder: SliceDecoder | None = None,
        anchor_refit: bool = True,
        trim_ends: bool = True,
        box_search: bool | None = None,
        runtime: str = "auto",
        expand_boxes: bool = True,
        shared_structures: bool = True,
        anatomical_order: bool = True,
    ) -> None:
        self.device = torch.device(device)
        self.batch_size = int(batch_size if batch_size is not None else self.default_batch_size(self.device))
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if decoder is None:
            if precision is None:
                precision = "bf16" if self.device.type == "cuda" else "fp32"
            decoder = SamCoreDecoder(
                core if core is not None else build_lite_medsam(),
                self.device,
                precision,
                decoder_precision,
                fast_encoder,
                quantize,
                organ_prompts,
                self.batch_size,
                runtime,
            )
        elif core is not None or organ_prompts or (precision, decoder_precision, runtime) != (None, None, "auto"):
            raise TypeError("give either a decoder or the core's settings (core, precision, organ_prompts, runtime)")
        self.decoder: SliceDecoder = decoder
        self._prior = prior
        self.iou_threshold = float(iou_threshold)
        self.box_margin_mm = float(box_margin_mm)
        self.track_margin_px = int(track_margin_px)
        self.progress = progress
        self.track_refine, self.joint_assignment = bool(track_refine), bool(joint_assignment)
        self.anchor_refit, self.trim_ends, self.box_search = bool(anchor_refit), bool(trim_ends), box_search
        self.expand_boxes, self.shared_structures = bool(expand_boxes), bool(shared_structures)
        self.anatomical_order = bool(anatomical_order)
        self.refine_decodes = 0

    @property
    def design_name(self) -> str:
        """The design whose masks this predictor draws (recorded in reports)."""
        return self.decoder.design_name

    @property
    def precision(self) -> str:
        return self.decoder.precision

    @property
    def encoded_slices(self) -> int:
        return self.decoder.encoded_slices

    @property
    def encode_seconds(self) -> float:
        return self.decoder.encode_seconds

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
        return InferenceState(
            volume=volume, intensities=model_intensities(volume), geometry=geometry_for(volume.array.shape[1:])
        )

    # ------------------------------------------------------------------ prior
    def fit_prior(self, state: InferenceState) -> FittedPrior | None:
        """Fit the location prior on the session's volume once (kept in ``state.prior``); None without a prior."""
        prior = self._location_prior()
        if state.prior is None and prior is not None:
            logger.info("fitting the location prior")
            state.prior = prior.fit(state.volume, tuple(state.volume.spacing))
        return state.prior

    def prior_boxes(self, state: InferenceState, organ_id: str) -> dict[int, Box | None]:
        """The prior's per-slice boxes of an organ, widened by ``box_margin_mm`` ({} when the prior lacks it;
        ``None`` on a slice: look for the organ there without a box)."""
        fitted = self.fit_prior(state)
        if fitted is None:
            raise ValueError(
                f"organ {organ_id!r} has only a text prompt and no location prior is configured: "
                f"give a box (add_box) or use the atlas prior"
            )
        if not fitted.present(organ_id):
            known = self.locatable_organs()
            if known is not None and organ_id not in known:
                logger.warning("%s: the location atlas does not have it; give a box to segment it", organ_id)
            else:
                logger.info("%s: the location prior places it outside this scan", organ_id)
            return {}
        margin = self.margin_px(state)
        return {
            int(z): None if b is None else tuple(float(v) for v in b)  # type: ignore[misc]
            for z, b in fitted.boxes(organ_id, margin_px=margin).items()
        }

    def _location_prior(self) -> LocationPrior | None:
        """The location prior, the default atlas prior built on first use."""
        if self._prior == "atlas":
            from organsam.priors import AtlasPrior, default_atlas

            self._prior = AtlasPrior(default_atlas())
        return self._prior  # type: ignore[return-value]

    def locatable_organs(self) -> set[str] | None:
        """The organs text prompts can be placed for (the location atlas's organs); None: any organ."""
        atlas = getattr(self._location_prior(), "atlas", None)
        return set(atlas.organ_ids()) if atlas is not None else None

    def margin_px(self, state: InferenceState) -> int:
        """``box_margin_mm`` in pixels of the session's slices (finest in-plane spacing)."""
        return int(round(self.box_margin_mm / min(state.volume.spacing[1], state.volume.spacing[2])))

    # ------------------------------------------------------------------ model
    def encode_slices(self, state: InferenceState, slices: list[int]) -> None:
        """Encode the given slices not yet in ``state.embeddings`` (in batches of ``batch_size``); they are kept
        there for every organ and every later run of the session."""
        self.decoder.encode(state, list(slices))

    def decode(self, state: InferenceState, jobs: list[DecodeJob]) -> list[Candidate]:
        """One candidate (mask (Y, X) bool, score) per job (slice, organ, box or None, points or None)."""
        return self.decoder.decode(state, [DecodeJob(*job) for job in jobs])

    # ------------------------------------------------------------------ propagation
    def propagate(self, state: InferenceState, reverse: bool = False) -> Iterator[tuple[int, list[str], np.ndarray]]:
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
        Z = state.volume.array.shape[0]
        order = range(Z - 1, -1, -1) if reverse else range(Z)
        state.memories.clear()  # a design's slice memory follows this pass, from its first slice
        if self.anchor_refit and any(p.text is not None for p in state.prompts.values()):
            self._search_anchors(state)
        planned, tracked, hidden = self._plan(state, tracked_too=True)
        self._segment(state, planned, tracked, order)
        dz = z_offset(planned, state.results, state.volume.spacing[0]) if self.anchor_refit else None
        if dz is not None and state.prior is not None:
            for oid in hidden:
                del state.prompts[oid], state.results[oid]
            move_prior(state, (dz, 0.0, 0.0), "anchor slice ranges")
            planned, _, hidden = self._plan(state, tracked_too=False)
            self._segment(state, planned, [], order)
        if self.trim_ends:  # after the anchor z step (it reads the anchors' drawn ends); hidden anchors still count
            state.results.update(trim_prior_placed(state))
        for oid in hidden:
            del state.prompts[oid], state.results[oid]
        for z in order:
            ids = [oid for oid, res in state.results.items() if res.mask[z].any()]
            if ids:
                yield z, ids, np.stack([state.results[oid].mask[z] for oid in ids])

    def _search_anchors(self, state: InferenceState) -> None:
        """Move the fitted prior in plane where its anchor boxes fit the image clearly better moved (once)."""
        fitted, known = self.fit_prior(state), self.locatable_organs()
        if fitted is None or any(m["step"] == "anchor search" for m in state.prior_moves):
            return
        boxes = {a: b for a in ANCHORS if known is None or a in known for b in [self.prior_boxes(state, a)] if b}
        decodes: list[int] = []
        offset = search_offset(state, boxes, lambda s, jobs: decodes.append(len(jobs)) or self.decode(s, jobs))
        move_prior(state, (0.0, *(offset or (0.0, 0.0))), "anchor search", decodes=sum(decodes))

    def _plan(
        self, state: InferenceState, tracked_too: bool
    ) -> tuple[dict[str, dict[int, Box | None]], list[str], list[str]]:
        """Fresh results, and what to decode: prior boxes of text prompts (user boxes override them), the organs
        prompted by boxes or points alone (``tracked_too``), the organs segmented unasked (:mod:`~.hidden_organs`)."""
        Z, Y, X = state.volume.array.shape
        planned: dict[str, dict[int, Box | None]] = {}
        tracked: list[str] = []
        for oid, p in state.prompts.items():
            if p.text is not None:
                state.results[oid] = OrganResult(mask=np.zeros((Z, Y, X), dtype=bool))
                planned[oid] = {**self.prior_boxes(state, oid), **p.boxes}
                state.results[oid].source = "prior" + ("+box" if p.boxes else "")
            elif tracked_too:
                state.results[oid] = OrganResult(mask=np.zeros((Z, Y, X), dtype=bool), source="track")
                tracked.append(oid)
        hidden: list[str] = []
        if planned and (state.prior is not None or self._location_prior() is not None):
            known, boxes_of = self.locatable_organs(), lambda o: self.prior_boxes(state, o)
            rules = (self.joint_assignment, self.anatomical_order)
            hidden = hidden_organs(planned, state.prompts, known, boxes_of, *rules)
        for oid in hidden:  # segmented for joint assignment and anatomical order: removed before anything is yielded
            state.prompts[oid] = OrganPrompt(oid, text=oid)
            state.results[oid] = OrganResult(mask=np.zeros((Z, Y, X), dtype=bool), source="prior")
            planned[oid] = self.prior_boxes(state, oid)
        return planned, tracked, hidden

    def _segment(
        self, state: InferenceState, planned: dict[str, dict[int, Box | None]], tracked: list[str], order: range
    ) -> None:
        """The prior pass (and tracking of box/point-prompted organs), then track refinement and joint
        assignment; fills ``state.results``."""
        Z = state.volume.array.shape[0]
        needed = {z for boxes in planned.values() for z in boxes}
        for oid in tracked:
            needed |= set(state.prompts[oid].boxes) | set(state.prompts[oid].points)
        bar = tqdm(total=Z, desc="segmenting", unit="slice", disable=not self.progress, leave=False)
        done: dict[str, set[int]] = {oid: set() for oid in tracked}
        search = self.box_search if self.box_search is not None else state.volume.modality == "MR"
        for direction in (order,) if not tracked else (order, order[::-1]):
            for z in direction:
                jobs: list[DecodeJob] = []
                for oid, boxes in planned.items():
                    if direction is order and z in boxes:
                        jobs.append(DecodeJob(z, oid, boxes[z], state.prompts[oid].points.get(z)))
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
                        jobs.append(DecodeJob(z, oid, box, p.points.get(z)))
                bar.update(1 if direction is order else 0)
                if not jobs:
                    continue
                self._prefetch(state, z, direction, needed)
                decoded = self.decode(state, jobs)
                decoded = search_boxes(state, jobs, decoded, self.decode) if search else decoded
                if self.expand_boxes:
                    jobs, decoded = expand_off_anchors(state, jobs, decoded, self.decode, self.iou_threshold)
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
        bar.close()
        if self.track_refine and planned:
            refiner = TrackRefiner(iou_threshold=self.iou_threshold)
            state.results.update(refiner.refine(state, planned, self.decode, self.margin_px(state)))
            self.refine_decodes += refiner.decodes
        if self.joint_assignment and planned:
            results, state.reassignments = assign_against_anchors(
                state, state.results, planned, self.decode, self.iou_threshold, shared_structures=self.shared_structures
            )
            state.results.update(results)
        if self.anatomical_order and planned:  # (hidden front organs are in planned too)
            res, moved = assign_by_order(state, state.results, planned, self.decode, self.iou_threshold, posterior_to())
            state.results.update(res)
            state.reassignments = list(state.reassignments) + moved

    def _prefetch(self, state: InferenceState, z: int, direction: range, needed: set[int]) -> None:
        """Encode ``z`` together with the next needed slices in the direction of travel (one batch)."""
        if z in state.embeddings:
            return
        seq = list(direction)
        i = seq.index(z)
        ahead = [s for s in seq[i:] if (s in needed or s == z) and s not in state.embeddings]
        self.encode_slices(state, ahead[: self.batch_size])
