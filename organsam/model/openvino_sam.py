"""LiteMedSAM's image encoder and mask decoder compiled by OpenVINO, the pipeline's CPU runtime.

OpenVINO fuses the TinyViT encoder and the two-way mask decoder into graphs that run faster than PyTorch on the
CPU with the same results to float rounding (embedding relative difference ~4e-6); ``bench/encoder_speed.py
--variants fast openvino openvino_bf16`` and ``bench/decoder_speed.py`` measure them (README, "Speed").

The graphs are converted from the core's own modules (``openvino.convert_model`` traces them), so any
SAM-family core with this architecture works, fine-tuned weights included. Converting takes ~12 s; the
converted graphs are kept in a cache folder (:func:`cache_dir`) under a key made of the weights' SHA-256, the
model code and the versions (:func:`_graph_key`), so later runs load them in well under a second. A cache that
cannot be written is not an error: the graphs are then converted in memory on each run.

Example::

    ov_sam = OpenVinoSam(core, precision="fp32")
    emb = ov_sam.encode(images)                                   # (B, 3, 256, 256) -> (B, 256, 64, 64)
    sparse, _ = core.embed_prompts(boxes=boxes)
    logits, iou = ov_sam.decode(emb, sparse, image_index)         # as core.decode(emb, boxes, image_index=...)
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from organsam.model.sam_core import EMBED_DIM, EMBED_SIZE, IMAGE_SIZE, SamCore

logger = logging.getLogger(__name__)

__all__ = ["GRAPH_VERSION", "OpenVinoSam", "cache_dir", "openvino_available"]

#: Part of the cache key (with the weights, the modules' printed structure, the model code's source, and the torch,
#: OpenVINO and organsam versions): bump it for any change to the traced computation the key would not see.
GRAPH_VERSION = "7"

#: OpenVINO's name of each of our precisions (its ``INFERENCE_PRECISION_HINT``).
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}


def openvino_available() -> bool:
    """Whether the ``openvino`` package can be imported here."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def cache_dir() -> Path:
    """Where converted graphs are kept: ``$ORGANSAM_CACHE_DIR``, else ``$XDG_CACHE_HOME/organsam`` (default
    ``~/.cache/organsam``), sub-folder ``openvino``."""
    root = os.environ.get("ORGANSAM_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "organsam")
    return Path(root) / "openvino"


def _graph_key(graph: nn.Module, ov_version: str) -> str:
    """What a converted graph depends on: weights and buffers, structure, the source of the model code, versions."""
    from organsam import __version__

    h = hashlib.sha256()
    h.update(_state_sha256(graph).encode())
    h.update(repr(graph).encode())
    for path in sorted(Path(__file__).resolve().parent.joinpath("components").glob("*.py")):
        h.update(path.read_bytes())
    h.update(f"{ov_version}|{torch.__version__}|{__version__}|{GRAPH_VERSION}".encode())
    return h.hexdigest()


def _state_sha256(module: nn.Module) -> str:
    """SHA-256 over a module's parameters and buffers, non-persistent ones too (names, shapes, dtypes, bytes)."""
    h = hashlib.sha256()
    tensors = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    for name, t in sorted(tensors.items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class _EncoderGraph(nn.Module):
    """(B, 3, 256, 256) model input -> (B, 256, 64, 64) embedding (the traced encoder)."""

    def __init__(self, core: SamCore) -> None:
        super().__init__()
        self.encoder = core.image_encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)


class _DecoderGraph(nn.Module):
    """SAM's single-mask decoding of P prompt sets against I images (the traced decoder).

    Inputs: embeddings (I, 256, 64, 64), sparse prompt tokens (P, T, 256), image_index (P,) int64. Outputs:
    logits (P, 1, 256, 256) and predicted IoU (P, 1), as ``SamCore.decode(..., image_index=...)`` without a mask
    prompt (the dense prompt is the no-mask embedding, a constant here).
    """

    def __init__(self, core: SamCore) -> None:
        super().__init__()
        self.decoder = core.mask_decoder
        dummy = torch.zeros(1, 4, device=core.get_dense_pe().device)
        _, dense = core.embed_prompts(boxes=dummy)
        self.register_buffer("pe", core.get_dense_pe().detach().clone())
        self.register_buffer("dense", dense[:1].detach().clone())

    def forward(
        self, embeddings: torch.Tensor, sparse: torch.Tensor, image_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decoder.predict_masks(embeddings, self.pe, sparse, self.dense, image_index, single_mask=True)


class OpenVinoSam:
    """A SAM core's encoder and single-mask decoder compiled by OpenVINO for the CPU.

    Args:
        core: the SAM core (its weights are copied into the graphs: build a new one after changing them).
        precision: encoder precision, ``"fp32"`` or ``"bf16"``.
        decoder_precision: decoder precision (default ``precision``).
        threads: CPU threads OpenVINO uses (default: torch's thread count).
        cache: keep converted graphs in :func:`cache_dir` (``False``: convert in memory each time).

    Raises:
        ImportError: OpenVINO is not installed (``pip install openvino``).
    """

    def __init__(
        self,
        core: SamCore,
        precision: str = "fp32",
        decoder_precision: str | None = None,
        threads: int | None = None,
        cache: bool = True,
    ) -> None:
        import openvino as ov

        decoder_precision = decoder_precision or precision
        for name, value in (("precision", precision), ("decoder_precision", decoder_precision)):
            if value not in _OV_PRECISION:
                raise ValueError(f"{name} must be one of {tuple(_OV_PRECISION)}, got {value!r}")
        self.precision, self.decoder_precision = precision, decoder_precision
        self.threads = int(threads or torch.get_num_threads())
        self._ov = ov
        self._core = ov.Core()
        core = core.cpu().eval()
        emb = torch.zeros(1, EMBED_DIM, EMBED_SIZE, EMBED_SIZE)
        self._encoder = self._compile(
            "encoder",
            _EncoderGraph(core),
            (torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE),),
            [ov.PartialShape([-1, 3, IMAGE_SIZE, IMAGE_SIZE])],
            precision,
            cache,
        )
        self._decoder = self._compile(
            "decoder",
            _DecoderGraph(core),
            (emb, torch.zeros(2, 2, EMBED_DIM), torch.zeros(2, dtype=torch.long)),
            [
                ov.PartialShape([-1, EMBED_DIM, EMBED_SIZE, EMBED_SIZE]),
                ov.PartialShape([-1, -1, EMBED_DIM]),
                ov.PartialShape([-1]),
            ],
            decoder_precision,
            cache,
        )
        self._encode_request = self._encoder.create_infer_request()
        self._decode_request = self._decoder.create_infer_request()

    def _compile(
        self,
        name: str,
        graph: nn.Module,
        example: tuple[torch.Tensor, ...],
        shapes: list[Any],
        precision: str,
        cache: bool,
    ) -> Any:
        """Load the graph from the cache (or convert it and store it there), then compile it for the CPU."""
        ov = self._ov
        graph = graph.eval()
        config = {
            "INFERENCE_PRECISION_HINT": _OV_PRECISION[precision],
            "INFERENCE_NUM_THREADS": self.threads,
            "PERFORMANCE_HINT": "LATENCY",
        }
        folder = cache_dir() / f"{name}-{_graph_key(graph, ov.__version__)[:24]}" if cache else None
        if folder is not None and folder.exists():
            try:
                return self._core.compile_model(self._core.read_model(str(folder / "model.xml")), "CPU", config)
            except RuntimeError as exc:  # a damaged entry (missing or truncated file): replaced below
                logger.warning("%s: cannot load the cached OpenVINO graph (%s); converting again", folder, exc)
                self._discard(folder)
        logger.info("converting LiteMedSAM's %s to an OpenVINO graph (once per weights and version)", name)
        # traced outside inference mode (the first decode may come from inside it), without gradients
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape branches traced: checked by tests
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace, which convert_model calls
            model = ov.convert_model(graph, example_input=example, input=shapes)
        if folder is not None:
            self._store(model, folder)
        return self._core.compile_model(model, "CPU", config)

    @staticmethod
    def _discard(folder: Path) -> None:
        """Move a damaged cache entry aside and delete it (an entry this cache wrote; nothing else is touched)."""
        aside = folder.with_name(f".{folder.name}-damaged-{os.getpid()}")
        try:
            os.replace(folder, aside)
        except OSError:
            return  # another process replaced it already
        shutil.rmtree(aside, ignore_errors=True)

    def _store(self, model: Any, folder: Path) -> None:
        """Write the graph whole or not at all: into a temporary folder beside ``folder``, then renamed."""
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
            tmp.chmod(0o755)  # readable like any cache folder (mkdtemp makes it private)
        except OSError as exc:
            logger.warning("cannot cache the OpenVINO graph in %s (%s); it is converted again next run", folder, exc)
            return
        try:
            self._ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
            os.replace(tmp, folder)
        except (OSError, RuntimeError) as exc:  # another process stored it first, or the disk is full
            if not folder.is_dir():
                logger.warning("cannot cache the OpenVINO graph in %s (%s)", folder, exc)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 256, 256) model inputs in [0, 1] -> (B, 256, 64, 64) float32 embeddings."""
        x = np.ascontiguousarray(images.detach().cpu().float().numpy())
        out = self._encode_request.infer([x])[0]
        return torch.from_numpy(np.array(out, copy=True))

    def decode(
        self, embeddings: torch.Tensor, sparse: torch.Tensor, image_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Single-mask decoding: embeddings (I, 256, 64, 64), sparse tokens (P, T, 256) from
        ``SamCore.embed_prompts``, image_index (P,) -> logits (P, 1, 256, 256) and IoU (P, 1), float32."""
        inputs = [
            np.ascontiguousarray(embeddings.detach().cpu().float().numpy()),
            np.ascontiguousarray(sparse.detach().cpu().float().numpy()),
            np.ascontiguousarray(image_index.detach().cpu().long().numpy()),
        ]
        result = self._decode_request.infer(inputs)
        logits, iou = (np.array(result[i], copy=True) for i in range(2))
        return torch.from_numpy(logits), torch.from_numpy(iou)
