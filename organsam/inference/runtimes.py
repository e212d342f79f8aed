"""What can run the shipped pipeline's LiteMedSAM core (one source for the names; no heavy imports, so the CLI
can offer them without importing torch). Resolved by :func:`organsam.inference.decoders.resolve_runtime`."""

from __future__ import annotations

__all__ = ["RUNTIMES"]

#: ``"auto"`` (OpenVINO on the CPU where it is installed and the core is a TinyViT LiteMedSAM, else PyTorch),
#: ``"torch"`` or ``"openvino"`` (:mod:`organsam.model.openvino_sam`).
RUNTIMES = ("auto", "torch", "openvino")
