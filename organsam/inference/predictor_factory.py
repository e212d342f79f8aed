"""Which predictor a ``segment`` call runs: the shipped pipeline or a trained design checkpoint.

One place for what :func:`organsam.inference.segment.segment`, the batch workers and the CLI accept:

* ``design="litemedsam"`` without a checkpoint, or with a SAM-family ``.pth`` (LiteMedSAM layout): the shipped
  pipeline (LiteMedSAM core placed by the atlas prior, :class:`VolumePredictor`);
* any design with a checkpoint written by ``organsam train`` (``model.safetensors`` + ``model.json``): that
  trained design (:func:`~organsam.inference.design_predictor.design_predictor`); ``design`` must match the
  checkpoint's (``"litemedsam"``, the default, accepts any);
* another design without a checkpoint: an error saying that none ships and how to make one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_DESIGN",
    "build_predictor",
    "check_design",
    "check_device",
    "default_design_prompts",
    "resolve_checkpoint",
    "is_design_checkpoint",
    "resolve_device",
]

#: The shipped pipeline's name: the LiteMedSAM core placed by the location prior. It is not a research design of
#: the registry; with a design checkpoint it stands for whatever design the checkpoint holds.
DEFAULT_DESIGN = "litemedsam"


def is_design_checkpoint(checkpoint: str | os.PathLike[str] | None) -> bool:
    """Whether ``checkpoint`` is a design checkpoint of ``organsam train`` (a tensor file with its JSON sidecar),
    as opposed to a SAM-family weight file for the core."""
    if checkpoint is None:
        return False
    from organsam.model.checkpoint import sidecar_path

    p = Path(checkpoint)
    return p.suffix != ".json" and sidecar_path(p).is_file()


def resolve_checkpoint(design: str, checkpoint: str | os.PathLike[str] | None) -> str | os.PathLike[str] | None:
    """``checkpoint`` as given; the path of the shipped one for ``packaged``, or for a research design given
    without a checkpoint when one of it ships."""
    from organsam.model.checkpoint import PACKAGED, packaged_checkpoint
    from organsam.weights import SHIPPED_DESIGNS

    if checkpoint is not None and str(checkpoint) == PACKAGED:
        return str(packaged_checkpoint(design))
    if checkpoint is None and design in SHIPPED_DESIGNS:
        return str(packaged_checkpoint(design))
    return checkpoint


def check_design(design: str, checkpoint: str | os.PathLike[str] | None) -> None:
    """Fail early (before any volume is read) for a design that cannot run.

    Raises:
        KeyError: unknown design name (with a suggestion).
        ValueError: a research design without a trained checkpoint.
        FileNotFoundError: the checkpoint does not exist.
    """
    from organsam.model.checkpoint import PACKAGED
    from organsam.registry import RENAMED_DESIGNS, get_design

    if design in RENAMED_DESIGNS:  # ``--design organsam`` (before 2026-12) also meant the shipped pipeline
        raise KeyError(
            f"design {design!r} was renamed: {DEFAULT_DESIGN!r} is the shipped pipeline (LiteMedSAM core + atlas "
            f"prior, the default) and {RENAMED_DESIGNS[design]!r} the research design of that name"
        )
    if design != DEFAULT_DESIGN:
        get_design(design)  # unknown name: KeyError with a suggestion
    checkpoint = resolve_checkpoint(design, checkpoint)
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint file does not exist; check the path")
    if design != DEFAULT_DESIGN and not is_design_checkpoint(checkpoint):
        raise ValueError(
            f"design {design!r} needs a trained checkpoint: pass --checkpoint {PACKAGED} (the shipped one, where it "
            f"ships) or --checkpoint runs/<run>/model.safetensors written by `organsam train --config ...` (with its "
            f"model.json beside it). Without one, use --design {DEFAULT_DESIGN} (LiteMedSAM core + atlas prior)"
        )


def check_device(device: str) -> None:
    """Refuse a device this machine cannot run, before any work.

    Raises:
        ValueError: unknown device name, or CUDA asked for where torch has no CUDA device.
    """
    if device in ("cpu", "auto"):
        return
    if device != "cuda" and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    import torch

    if not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} asked for, but this torch build sees no CUDA GPU "
            f"(torch {torch.__version__}); use --device cpu, or install a CUDA build of torch"
        )
    suffix = device.partition(":")[2]
    if ":" in device and not suffix.isdigit():
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    index = int(suffix) if suffix else 0
    if index >= torch.cuda.device_count():
        raise ValueError(
            f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s); "
            f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}"
        )


def resolve_device(device: str) -> str:
    """``"auto"`` becomes ``"cuda"`` where torch sees a CUDA GPU and ``"cpu"`` otherwise (logged); other names pass."""
    if device != "auto":
        return device
    import torch

    chosen = "cuda" if torch.cuda.is_available() else "cpu"
    logger.info("device: %s (auto: %s)", chosen, "a CUDA GPU is present" if chosen == "cuda" else "no CUDA GPU")
    return chosen


def default_design_prompts(model: Any) -> str:
    """How ``segment --design`` prompts a design by default: text alone for a prompt-free design (pg_sam, seg_sam:
    every organ of a slice in one pass), else text + the atlas prior's boxes."""
    return "text" if getattr(model, "prompt_free", False) else "prior"


def build_predictor(
    design: str = DEFAULT_DESIGN,
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    device: str = "auto",
    fast: bool = False,
    progress: bool = True,
    organ_prompts: str | os.PathLike[str] | bool = False,
    design_prompts: str | None = None,
    prior: Any = None,
    runtime: str = "auto",
) -> Any:
    """The predictor of a segment call.

    Args:
        design: design name (see the module docstring).
        checkpoint: a design checkpoint of ``organsam train``, or a SAM-family ``.pth`` for the shipped pipeline.
        device: ``"auto"`` (:func:`resolve_device`), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        fast: coarser atlas registration and bfloat16 where the hardware runs it natively.
        progress: show progress bars.
        organ_prompts: learned organ prompt tokens for the shipped pipeline (see :class:`VolumePredictor`).
        design_prompts: with a design checkpoint: ``"prior"`` (text + the atlas prior's boxes), ``"text"``, or
            ``None``: text alone for a prompt-free design (``prompt_free``: pg_sam, seg_sam), else the prior.
        prior: a location prior to use instead of the atlas prior (e.g. one fitted beforehand); ``None``: the
            atlas prior (coarser with ``fast``).
        runtime: what runs the shipped pipeline's core (see :class:`VolumePredictor`); a design checkpoint runs
            in PyTorch (``"auto"`` or ``"torch"``).

    Returns:
        A :class:`VolumePredictor` (drawing with the LiteMedSAM core, or with the trained design).
    """
    from organsam.inference.volume_predictor import VolumePredictor

    check_design(design, checkpoint)
    checkpoint = resolve_checkpoint(design, checkpoint)
    device = resolve_device(device)
    precision = None  # the predictor's default: fp32 on CPU, bf16 on CUDA
    if fast:
        from organsam.model.components.fast_image_encoder import bf16_is_fast

        precision = "bf16" if bf16_is_fast(device) else None
    if prior is None:
        prior = "atlas"
        if fast:
            from organsam.priors import AtlasPrior, default_atlas

            prior = AtlasPrior(default_atlas(), fast=True)
    if is_design_checkpoint(checkpoint):
        from organsam.inference.design_predictor import design_predictor
        from organsam.model.checkpoint import load_checkpoint

        if runtime == "openvino":
            raise ValueError(
                "--runtime openvino runs the shipped pipeline's LiteMedSAM core; a design checkpoint runs in "
                "PyTorch (leave --runtime at auto or give torch)"
            )
        if organ_prompts:
            raise ValueError(
                "--organ-prompts adds tokens to the shipped pipeline's boxes; a design checkpoint "
                "brings its own prompts (for organ_prompts checkpoints use the design itself)"
            )
        assert checkpoint is not None
        model = load_checkpoint(checkpoint, design=None if design == DEFAULT_DESIGN else design)
        prompts = design_prompts or default_design_prompts(model)
        logger.info(
            "segmenting with the trained %s design from %s (prompts: %s)", type(model).__name__, checkpoint, prompts
        )
        return design_predictor(
            model, prompts=prompts, prior=prior, device=device, progress=progress, precision=precision
        )
    from organsam.model.sam_core import build_lite_medsam

    return VolumePredictor(
        build_lite_medsam(checkpoint) if checkpoint else None,
        prior=prior,
        device=device,
        progress=progress,
        precision=precision,
        organ_prompts=organ_prompts,
        runtime=runtime,
    )
