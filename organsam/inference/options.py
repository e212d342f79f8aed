"""What a segmentation run is asked to do: the organs (:class:`OrganRequest`, from the user's own words) and
the settings (:class:`SegmentOptions`). The CLI, ``organsam.segment``, batch workers and the server build these
two and nothing else decides them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from organsam.inference.predictor_factory import DEFAULT_DESIGN, build_predictor, check_design, check_device
from organsam.inference.runtimes import RUNTIMES
from organsam.vocabulary import load_vocabulary, parse_prompt

__all__ = ["DEFAULT_MIN_SLICE_MM", "DESIGN_PROMPT_MODES", "OrganRequest", "SegmentOptions", "resolve_organs"]

#: Thinner slices are segmented on a coarser z grid (see :func:`organsam.inference.pipeline.model_grid`), in mm;
#: 0: every input slice. Off by default: halving the slices of our 2-5 mm CTs cost 0.07-0.11 mean Dice
#: (bench/slice_spacing.py).
DEFAULT_MIN_SLICE_MM = 0.0

#: Where a design checkpoint looks for the text-prompted organs.
DESIGN_PROMPT_MODES = ("prior", "text")

#: The prompt text that stands for the default organ set (``--all``).
ALL_ORGANS_TEXT = "all organs"


@dataclass(frozen=True)
class OrganRequest:
    """The organs a run segments and the words they came from.

    Attributes:
        prompt: the user's prompt as given (texts joined by ``"; "``; ``"all organs"`` for ``--all``).
        organ_ids: vocabulary ids in prompt order, without repeats (label values are fixed per organ: palette).
    """

    prompt: str
    organ_ids: tuple[str, ...]


def resolve_organs(organs: str | Sequence[str] | OrganRequest | None, all_organs: bool = False) -> OrganRequest:
    """Turn a prompt (free text, a list of texts or vocabulary ids) into an :class:`OrganRequest`.

    Args:
        organs: ``"liver, left kidney"``, ``["liver", "kidney_left"]``, ... (an :class:`OrganRequest` is returned
            as it is).
        all_organs: the default organ set instead (``organs`` must then be None).

    Raises:
        ValueError: nothing asked for, or the prompt names no organ.
        organsam.vocabulary.UnknownOrganError: a term is not in the vocabulary (with "did you mean").
    """
    if isinstance(organs, OrganRequest):
        return organs
    if all_organs:
        texts = [ALL_ORGANS_TEXT]
    elif organs is None or (isinstance(organs, str) and not organs.strip()):
        raise ValueError(
            "no organ named: say which organs to segment (--organs 'liver, spleen' on the command "
            "line, organs='liver, spleen' in Python) or ask for all of them (--all, all_organs=True)"
        )
    else:
        texts = [organs] if isinstance(organs, str) else [str(t) for t in organs]
    vocab = load_vocabulary()
    ids: list[str] = []
    for text in texts:
        for oid in [text] if text in vocab else parse_prompt(text):
            if oid not in ids:
                ids.append(oid)
    if not ids:
        raise ValueError(f"the prompt {'; '.join(texts)!r} names no organ; e.g. organs='liver, spleen'")
    return OrganRequest("; ".join(texts), tuple(ids))


@dataclass(frozen=True)
class SegmentOptions:
    """Settings of a segmentation run (one source for their defaults).

    Attributes:
        design: ``"litemedsam"`` (the shipped pipeline: LiteMedSAM placed by the atlas prior) or a trained design
            (needs ``checkpoint``).
        checkpoint: a design checkpoint of ``organsam train``, or a SAM-family ``.pth`` for the pipeline's core.
        device: ``"auto"`` (a CUDA GPU when torch sees one, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        fast: coarser atlas registration and bfloat16 where the hardware runs it natively.
        modality: ``"CT"``/``"MR"`` to override the guess from the file.
        min_slice_mm: thinner slices are segmented on a grid this coarse and the masks interpolated back; 0: off.
        organ_prompts: learned organ prompt tokens on the pipeline's boxes: ``True`` (packaged table), a path,
            or ``False``.
        design_prompts: with a design checkpoint: ``"prior"`` (text + atlas boxes), ``"text"`` (text alone) or
            ``None``: ``"text"`` for a prompt-free design (pg_sam, seg_sam: all organs in one pass), else ``"prior"``.
        verify: reject masks that cannot be the organ asked for (:mod:`organsam.inference.verification`).
        runtime: what runs the shipped pipeline's LiteMedSAM core: ``"auto"`` (OpenVINO on the CPU where it is
            installed, else PyTorch), ``"torch"`` or ``"openvino"`` (``organsam.inference.runtimes``).
    """

    design: str = DEFAULT_DESIGN
    checkpoint: str | None = None
    device: str = "auto"
    fast: bool = False
    modality: str | None = None
    min_slice_mm: float = DEFAULT_MIN_SLICE_MM
    organ_prompts: str | bool = False
    design_prompts: str | None = None
    verify: bool = True
    runtime: str = "auto"

    def __post_init__(self) -> None:
        if self.checkpoint is not None and not isinstance(self.checkpoint, str):
            object.__setattr__(self, "checkpoint", os.fspath(self.checkpoint))
        if self.organ_prompts not in (True, False) and not isinstance(self.organ_prompts, str):
            object.__setattr__(self, "organ_prompts", os.fspath(self.organ_prompts))

    def check(self) -> None:
        """Fail before any volume is read: unknown design, missing checkpoint, bad setting (one-line errors)."""
        check_design(self.design, self.checkpoint)
        if self.design_prompts is not None and self.design_prompts not in DESIGN_PROMPT_MODES:
            raise ValueError(f"design_prompts must be one of {DESIGN_PROMPT_MODES}, got {self.design_prompts!r}")
        if self.modality not in (None, "CT", "MR"):
            raise ValueError(f"modality must be 'CT' or 'MR', got {self.modality!r}")
        if not self.min_slice_mm >= 0 or self.min_slice_mm == float("inf"):
            raise ValueError(f"min_slice_mm must be a finite number >= 0 (0: every slice), got {self.min_slice_mm}")
        check_device(self.device)
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {self.runtime!r}")

    def build_predictor(self, progress: bool = True) -> Any:
        """The predictor these options describe (see :func:`organsam.inference.predictor_factory.build_predictor`)."""
        return build_predictor(
            self.design,
            self.checkpoint,
            device=self.device,
            fast=self.fast,
            progress=progress,
            organ_prompts=self.organ_prompts,
            design_prompts=self.design_prompts,
            runtime=self.runtime,
        )
