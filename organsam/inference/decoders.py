"""What turns prompts on a slice into masks: the :class:`SliceDecoder` seam of the volume predictor.

Two implementations, composed into :class:`~organsam.inference.volume_predictor.VolumePredictor`:

* :class:`SamCoreDecoder`: the LiteMedSAM core (the shipped pipeline): the image encoder (fused, optionally
  bfloat16) once per slice, then the prompt encoder and mask decoder for every (box, points) job, the
  image side computed once per slice, optionally with learned organ prompt tokens next to each box;
* :class:`DesignDecoder`: a trained research design (``organsam train`` checkpoint): its own encoder once per
  slice, then ``design(None, organ_index, boxes, points, encoded=...)``; the score is the design's presence
  probability.

Both keep a slice's encoding in ``state.embeddings`` and return one :class:`Candidate` per :class:`DecodeJob`.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Protocol

import numpy as np
import torch

from organsam.inference.organ_prompt_table import OrganPromptTable, load_prompt_table
from organsam.inference.runtimes import RUNTIMES
from organsam.inference.state import Candidate, DecodeJob, InferenceState
from organsam.model.base import OrganSegmenter
from organsam.model.components.fast_image_encoder import PRECISIONS, FastImageEncoder
from organsam.model.components.image_encoder import TinyViT
from organsam.model.openvino_sam import OpenVinoSam, openvino_available
from organsam.model.sam_core import SamCore
from organsam.preprocessing.slices import to_model_input_batch

logger = logging.getLogger(__name__)

__all__ = ["DECODE_CHUNK", "EMBEDDING_STORAGE", "DesignDecoder", "SamCoreDecoder", "SliceDecoder", "resolve_runtime"]

#: Prompts decoded in one call of the core at most: OpenVINO keeps the buffers of the largest call it has run
#: (55-80 MB a prompt in fp32), and from 4 prompts on the time per prompt no longer falls
#: (`python bench/decoder_speed.py --chunks 1 2 4 8 16`: 17.7 ms and 1.15 GB peak at 4, 17.4 ms and 1.8 GB at 16).
DECODE_CHUNK = 4

#: How the LiteMedSAM pipeline keeps a slice's embedding between decodes: float16 (2 MB a slice instead of 4; a
#: 300-slice CT's embeddings take 0.6 GB instead of 1.2). Decoding casts back to float32; the rounding (relative
#: 2^-11) is far below the encoder's own float32-vs-bf16 differences and leaves every organ's Dice as it was
#: (`python bench/quality.py --protocol amos15 --rows organsam`).
EMBEDDING_STORAGE = torch.float16


class SliceDecoder(Protocol):
    """Encodes slices and decodes prompts on them.

    Attributes:
        design_name: the design recorded in reports (``"litemedsam"`` for the shipped pipeline).
        device: where the model runs.
        precision: the encoder's compute precision (``"fp32"`` / ``"bf16"``).
        compute: runtime, encoder and decoder precision, as recorded in reports.
        batch_size: slices per encoder pass.
        encoded_slices: slices encoded so far; encode_seconds: seconds spent encoding.
        decoded_prompts: prompts (jobs) decoded so far.
    """

    design_name: str
    device: torch.device
    precision: str
    compute: dict[str, str]
    batch_size: int
    encoded_slices: int
    decoded_prompts: int
    encode_seconds: float

    def check_organ(self, organ_id: str) -> None:
        """Raise when this decoder cannot segment ``organ_id`` (e.g. outside a design's vocabulary)."""

    def encode(self, state: InferenceState, slices: list[int]) -> None:
        """Encode the slices not yet in ``state.embeddings`` (in batches of ``batch_size``) and keep them there."""

    def decode(self, state: InferenceState, jobs: list[DecodeJob]) -> list[Candidate]:
        """One candidate (mask (Y, X) bool on the slice, score) per job, in order."""


def _check_precisions(precision: str, decoder_precision: str) -> None:
    for name, value in (("precision", precision), ("decoder_precision", decoder_precision)):
        if value not in PRECISIONS:
            raise ValueError(f"{name} must be one of {PRECISIONS}, got {value!r}")


def resolve_runtime(runtime: str, device: torch.device, core: SamCore, fast_encoder: bool, quantize: bool) -> str:
    """``"torch"`` or ``"openvino"`` for a runtime setting (see :data:`RUNTIMES`); one-line errors."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    unmet = [
        why
        for why, bad in (
            (f"the device is {device.type}, not the CPU", device.type != "cpu"),
            ("the core's encoder is not a TinyViT", not isinstance(core.image_encoder, TinyViT)),
            ("fast_encoder=False asks for the plain PyTorch encoder", not fast_encoder),
            ("quantize=True is a PyTorch option", quantize),
        )
        if bad
    ]
    if runtime == "openvino":
        if unmet:
            why = "; ".join(unmet)
            raise ValueError(f"runtime 'openvino' cannot run here: {why}; use runtime 'torch' (--runtime torch)")
        if not openvino_available():
            raise ValueError("runtime 'openvino' needs the openvino package: pip install openvino")
        return "openvino"
    if runtime == "auto" and not unmet and openvino_available():
        return "openvino"
    return "torch"


class _Timed:
    """Encodes missing slices in batches, counting slices and seconds."""

    device: torch.device
    batch_size: int = 1
    encoded_slices: int = 0
    decoded_prompts: int = 0
    encode_seconds: float = 0.0

    def _encode_missing(self, state: InferenceState, slices: list[int], encode_batch: Any) -> None:
        missing = [z for z in dict.fromkeys(slices) if z not in state.embeddings]
        for i in range(0, len(missing), self.batch_size):
            chunk = missing[i : i + self.batch_size]
            t0 = time.perf_counter()
            imgs, _ = to_model_input_batch(state.intensities[chunk])
            for z, enc in zip(chunk, encode_batch(imgs)):
                state.embeddings[z] = enc
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.encode_seconds += time.perf_counter() - t0
            self.encoded_slices += len(chunk)


class SamCoreDecoder(_Timed):
    """The LiteMedSAM core as a :class:`SliceDecoder`.

    Args:
        core: the SAM core (LiteMedSAM weights).
        device: torch device.
        precision: encoder precision, ``"fp32"`` or ``"bf16"``.
        decoder_precision: mask decoder precision (default: ``precision``).
        fast_encoder: encode with :class:`FastImageEncoder` (batch norms folded, channels-last) when the
            encoder is a TinyViT.
        quantize: dynamic int8 linear layers in the fast encoder's attention stages (CPU only).
        organ_prompts: learned organ prompt tokens appended to every box prompt of an organ the table holds: a
            table, ``True`` (the packaged one), a path to an exported table, or ``False``/``None`` (none).
        batch_size: slices per encoder pass.
        runtime: what runs the core (:data:`RUNTIMES`); ``self.runtime`` is the one resolved.
    """

    design_name = "litemedsam"

    def __init__(
        self,
        core: SamCore,
        device: torch.device,
        precision: str = "fp32",
        decoder_precision: str | None = None,
        fast_encoder: bool = True,
        quantize: bool = False,
        organ_prompts: OrganPromptTable | str | os.PathLike[str] | bool | None = None,
        batch_size: int = 1,
        runtime: str = "auto",
    ) -> None:
        if quantize and not fast_encoder:
            raise ValueError("quantize=True needs fast_encoder=True")
        self.device = device
        self.core = core.to(device).eval()
        self.runtime = resolve_runtime(runtime, device, self.core, fast_encoder, quantize)
        decoder_precision = decoder_precision or precision
        _check_precisions(precision, decoder_precision)
        self._openvino: OpenVinoSam | None = None
        self.precision, self.decoder_precision = precision, decoder_precision
        self.fast_encoder, self.quantize = bool(fast_encoder), bool(quantize)
        if organ_prompts is True or isinstance(organ_prompts, (str, os.PathLike)):
            organ_prompts = load_prompt_table(None if organ_prompts is True else organ_prompts)
        self.organ_prompts: OrganPromptTable | None = organ_prompts or None
        self.batch_size = int(batch_size)
        self._fast: FastImageEncoder | None = None
        self.encoded_slices, self.encode_seconds = 0, 0.0

    @property
    def compute(self) -> dict[str, str]:
        """What runs the model and in which precision (recorded in reports)."""
        return {"runtime": self.runtime, "precision": self.precision, "decoder_precision": self.decoder_precision}

    def check_organ(self, organ_id: str) -> None:
        return None  # boxes and points work for any organ

    def openvino(self) -> OpenVinoSam:
        """The core compiled by OpenVINO (built on first use, from the cache where it is there)."""
        if self._openvino is None:
            self._openvino = OpenVinoSam(self.core, self.precision, self.decoder_precision)
        return self._openvino

    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 256, 256) model inputs -> (B, 256, 64, 64) float32 embeddings."""
        if self.runtime == "openvino":
            return self.openvino().encode(images)
        if self.fast_encoder and isinstance(self.core.image_encoder, TinyViT):
            if self._fast is None:
                self._fast = FastImageEncoder(
                    self.core.image_encoder,
                    precision=self.precision,
                    quantize=self.quantize and self.device.type == "cpu",
                    channels_last=True,
                ).to(self.device)
            return self._fast(images)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return self.core.encode(images, keep_levels=False).embedding.float()

    @torch.inference_mode()
    def encode(self, state: InferenceState, slices: list[int]) -> None:
        self._encode_missing(
            state,
            slices,
            lambda imgs: self.encode_images(torch.from_numpy(imgs).to(self.device)).to(EMBEDDING_STORAGE),
        )

    @torch.inference_mode()
    def decode(self, state: InferenceState, jobs: list[DecodeJob]) -> list[Candidate]:
        if not jobs:
            return []
        self.decoded_prompts += len(jobs)
        self.encode(state, sorted({job.z for job in jobs}))
        geom = state.geometry
        table = self.organ_prompts
        groups: dict[tuple[bool, bool, int, bool], list[int]] = {}
        for j, job in enumerate(jobs):
            npts = 0 if job.points is None else len(job.points[0])
            tokens = table is not None and job.box is not None and job.points is None and job.organ_id in table
            groups.setdefault((job.box is not None, job.points is not None, npts, tokens), []).append(j)
        results: list[Candidate | None] = [None] * len(jobs)
        chunks = [
            (key, idx[c : c + DECODE_CHUNK]) for key, idx in groups.items() for c in range(0, len(idx), DECODE_CHUNK)
        ]
        for (has_box, has_pts, _, tokens), idx in chunks:
            # only this chunk's slices are stacked: a call spanning a whole volume would copy every embedding
            slices = sorted({jobs[j].z for j in idx})
            pos = {z: i for i, z in enumerate(slices)}
            emb = torch.stack([state.embeddings[z] for z in slices]).float()
            image_index = torch.tensor([pos[jobs[j].z] for j in idx], device=self.device)
            boxes = points = extra = None
            if tokens:
                assert table is not None
                extra = table.lookup([jobs[j].organ_id for j in idx], self.device)
            if has_box:
                boxes = torch.from_numpy(np.stack([geom.box_to_model(jobs[j].box) for j in idx])).to(self.device)
            if has_pts:
                coords = np.stack([geom.points_to_model(jobs[j].points[0]) for j in idx])  # type: ignore[index]
                labels = np.stack([jobs[j].points[1] for j in idx])  # type: ignore[index]
                points = (torch.from_numpy(coords).to(self.device), torch.from_numpy(labels).to(self.device))
            if self.runtime == "openvino":
                sparse, _ = self.core.embed_prompts(boxes, points, sparse_extra=extra, batch_size=len(idx))
                logits, iou = self.openvino().decode(emb, sparse, image_index)
            else:
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.decoder_precision == "bf16"):
                    logits, iou = self.core.decode(
                        emb, boxes=boxes, points=points, sparse_extra=extra, image_index=image_index
                    )
            masks = (geom.logits_to_original(logits.float())[:, 0] > 0).cpu().numpy()
            for k, j in enumerate(idx):
                results[j] = Candidate(masks[k], float(iou[k, 0]))
        return [r for r in results if r is not None]


class DesignDecoder(_Timed):
    """A trained research design as a :class:`SliceDecoder`.

    Args:
        model: a trained design (:func:`organsam.model.checkpoint.load_checkpoint`).
        device: torch device.
        precision: encoder precision; decoder_precision: the design's decoding precision (default: ``precision``).
        batch_size: slices per encoder pass.
        memory: for a design with a slice memory (crisp_sam2), condition each slice on the organ's earlier
            slices in the order the volume is segmented (``False``: every slice alone).
        max_slices: encoder outputs kept at most (the slices encoded first are dropped beyond it): with pg_sam's
            two fine levels a slice holds about 29 MB, so a 300-slice CT would otherwise hold 8.6 GB. A design
            predictor decodes each slice in one pass (no second decodes), so a few slices beyond the encoder
            batch are enough.
    """

    def __init__(
        self,
        model: OrganSegmenter,
        device: torch.device,
        precision: str = "fp32",
        decoder_precision: str | None = None,
        batch_size: int = 1,
        memory: bool = True,
        max_slices: int = 8,
    ) -> None:
        if not isinstance(model, OrganSegmenter):
            raise TypeError(
                f"model must be a design (OrganSegmenter), got {type(model).__name__}; load one with "
                f"organsam.model.checkpoint.load_checkpoint"
            )
        decoder_precision = decoder_precision or precision
        _check_precisions(precision, decoder_precision)
        self.device = device
        self.model = model.to(device).eval()
        self.design_name = str(getattr(model, "design_name", type(model).__name__))
        self.precision, self.decoder_precision = precision, decoder_precision
        self.batch_size = int(batch_size)
        self.encoded_slices, self.encode_seconds = 0, 0.0
        #: the design conditions each slice on the organ's earlier slices (crisp_sam2's memory bank)
        self.memory = bool(memory) and hasattr(model, "track_organs")
        self.max_slices = int(max_slices)

    def _track(
        self,
        state: InferenceState,
        z: int,
        organ_ids: list[str],
        organ_index: torch.Tensor,
        enc: Any,
        boxes: torch.Tensor | None,
        points: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> Any:
        """Decode slice ``z`` for several organs, each conditioned on its own memory bank (``state.memories``),
        then store the slice there. The organ's first slice and the slices the user prompted (box or points) are
        conditioning memories, kept; the others are evicted by the bank's policy beyond its capacity, so the
        memory stays bounded. Each slice is decoded once per pass, and for text alone once more from a box around
        that mask (the design's box round, ``text_box_rounds``)."""
        banks = [state.memories.setdefault(oid, self.model.new_memory_bank()) for oid in organ_ids]
        user = [z in state.prompts[oid].boxes or z in state.prompts[oid].points for oid in organ_ids]
        spacing = float(state.volume.spacing[0])
        return self.model.track_organs(enc, organ_index, banks, z, boxes, points, spacing=spacing, conditioning=user)

    @property
    def compute(self) -> dict[str, str]:
        """What runs the model and in which precision (recorded in reports)."""
        return {"runtime": "torch", "precision": self.precision, "decoder_precision": self.decoder_precision}

    def check_organ(self, organ_id: str) -> None:
        self.model.organ_index_of([organ_id])  # an organ outside the design's vocabulary fails here, named

    @torch.inference_mode()
    def _encode_batch(self, imgs: np.ndarray) -> list[Any]:
        """Per-slice encoder outputs holding only the levels the design reads (the others: empty placeholders,
        so a (64, 256, 256) level-0 map is not kept for a design that never reads it)."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            enc = self.model.encode_plain(torch.from_numpy(imgs).to(self.device))
        reads = set(self.model.encoder_levels)
        empty = enc.embedding.new_empty((1, 0, 0, 0))
        out = []
        for k in range(len(imgs)):
            one = enc.select(k)
            out.append(type(one)(one.embedding, [lv if i in reads else empty for i, lv in enumerate(one.levels)]))
        return out

    @torch.inference_mode()
    def encode(self, state: InferenceState, slices: list[int]) -> None:
        """Encode the missing slices; beyond ``max_slices`` kept, the slices encoded first are dropped (they are
        encoded again if asked for later), so a long volume does not hold every slice's encoder levels."""
        self._encode_missing(state, slices, self._encode_batch)
        keep = set(slices)
        over = len(state.embeddings) - max(self.max_slices, len(keep))
        for z in [z for z in state.embeddings if z not in keep][: max(over, 0)]:
            del state.embeddings[z]

    @torch.inference_mode()
    def decode(self, state: InferenceState, jobs: list[DecodeJob]) -> list[Candidate]:
        if not jobs:
            return []
        self.decoded_prompts += len(jobs)
        geom = state.geometry
        results: list[Candidate | None] = [None] * len(jobs)
        groups: dict[tuple[int, bool, bool, int], list[int]] = {}
        for j, job in enumerate(jobs):
            npts = 0 if job.points is None else len(job.points[0])
            groups.setdefault((job.z, job.box is not None, job.points is not None, npts), []).append(j)
        for (z, has_box, has_pts, _), idx in groups.items():
            self.encode(state, [z])
            enc = state.embeddings[z]
            organ_index = self.model.organ_index_of([jobs[j].organ_id for j in idx]).to(self.device)
            boxes = points = None
            if has_box:
                boxes = (
                    torch.from_numpy(np.stack([geom.box_to_model(jobs[j].box) for j in idx])).float().to(self.device)
                )
            if has_pts:
                coords = np.stack([geom.points_to_model(jobs[j].points[0]) for j in idx])  # type: ignore[index]
                labels = np.stack([jobs[j].points[1] for j in idx])  # type: ignore[index]
                points = (torch.from_numpy(coords).to(self.device), torch.from_numpy(labels).to(self.device))
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.decoder_precision == "bf16"):
                if self.memory:
                    out = self._track(state, z, [jobs[j].organ_id for j in idx], organ_index, enc, boxes, points)
                else:
                    out = self.model(None, organ_index, boxes, points, encoded=enc)
            score = torch.sigmoid(out.presence_logit.float()).reshape(-1).cpu()
            masks = (geom.logits_to_original(out.masks.float())[:, 0] > 0).cpu().numpy()
            for k, j in enumerate(idx):
                results[j] = Candidate(masks[k], float(score[k]))
        return [r for r in results if r is not None]
