"""Frozen image-encoder features cached on disk per slice, so the light parts of a design train without
re-running the encoder (on CPU that is most of a step's time).

Layout: ``<root>/<encoder hash>/<case id>/<slice:04d>.safetensors`` with tensors ``embedding``
(256, 64, 64) and ``level_<i>`` for the encoder levels the design reads (``model.encoder_levels``: pg_sam
levels 0-1, crisp_sam2 level 2). The encoder hash covers the image encoder's weights, the stored levels,
the dtype and the preprocessing tag (window and slice recipe), so a changed encoder or preprocessing
never reads stale features. Writes are atomic.

Cached features are those of the *unaugmented* slice: training with the cache turns spatial and
intensity augmentation off (box jitter and organ sampling still vary). Only designs whose image
encoder is frozen and has no LoRA adapters can use it (``freeze_image_encoder: true``, ``lora_rank: 0``:
cached features would bypass the adapters); crisp_sam2 injects text into the encoder
from level 2 on, so it re-runs stage 3 and the neck from the cached level 2 (still skipping most of the
encoder).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from organsam.io.files import atomic_path
from organsam.model.components.image_encoder import EncoderOutput

logger = logging.getLogger(__name__)

__all__ = ["FeatureCache", "encoder_hash"]

_VERSION = "feature-cache-v1"


def encoder_hash(model: torch.nn.Module, levels: Sequence[int], dtype: torch.dtype, tag: str = "") -> str:
    """SHA-256 (hex) of the image encoder's weights plus the cache settings."""
    h = hashlib.sha256(f"{_VERSION}|{tuple(levels)}|{dtype}|{tag}".encode())
    state = model.core.image_encoder.state_dict()  # type: ignore[union-attr]
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous().reshape(-1)
        h.update(key.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class FeatureCache:
    """Per-slice cache of plain encoder outputs.

    Args:
        root: cache folder.
        model: the design (an ``OrganSegmenter`` with a frozen image encoder).
        dtype: storage dtype (``float32`` exact; ``float16`` halves the disk use).
        tag: preprocessing tag (e.g. ``"abdomen|to_model_input-v1"``) mixed into the hash.

    Raises:
        ValueError: the image encoder has LoRA adapters or trainable parameters.
    """

    def __init__(self, root: str | Path, model: torch.nn.Module, dtype: str = "float32", tag: str = "") -> None:
        from organsam.model.components.lora import lora_modules

        n_lora = len(lora_modules(model.core.image_encoder))  # type: ignore[union-attr, arg-type]
        if n_lora:
            raise ValueError(
                f"the feature cache cannot be used with LoRA adapters in the image encoder ({n_lora} adapted "
                f"layers, lora_rank {getattr(getattr(model, 'config', None), 'lora_rank', '?')}): cached "
                f"features would bypass the adapters, which would then never train; set data.feature_cache: "
                f"false (or model lora_rank: 0)"
            )
        if any(p.requires_grad for p in model.core.image_encoder.parameters()):  # type: ignore[union-attr]
            raise ValueError(
                "the feature cache needs a frozen image encoder; set freeze_image_encoder: true in the "
                "design config or turn data.feature_cache off"
            )
        if dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"feature cache dtype must be float32, float16 or bfloat16, got {dtype!r}")
        self.dtype = getattr(torch, dtype)
        self.levels = tuple(int(lv) for lv in getattr(model, "encoder_levels", ()))
        self.hash = encoder_hash(model, self.levels, self.dtype, tag)
        self.root = Path(root) / self.hash[:16]
        self.hits = 0
        self.misses = 0

    def path(self, case_id: str, z: int) -> Path:
        """File of one slice's features."""
        return self.root / case_id / f"{int(z):04d}.safetensors"

    def put(self, case_id: str, z: int, enc: EncoderOutput, i: int) -> Path:
        """Store item ``i`` of a batch of encoder outputs as the features of slice ``z`` of ``case_id``.

        Only the embedding and the levels this cache keeps are written (atomically); one encoder pass with
        ``keep_levels=True`` can fill several caches of different level sets.

        Args:
            case_id: the case the slice belongs to.
            z: slice index.
            enc: encoder outputs of a batch: ``embedding`` (B, 256, 64, 64) and ``levels``.
            i: the item of the batch to store.

        Returns:
            The file written.
        """
        from safetensors.torch import save_file

        path = self.path(case_id, z)
        tensors = {"embedding": enc.embedding[i].detach().to("cpu", self.dtype).contiguous()}
        for lv in self.levels:
            tensors[f"level_{lv}"] = enc.levels[lv][i].detach().to("cpu", self.dtype).contiguous()
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"hash": self.hash})
        return path

    def _load(self, path: Path) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(path))

    @torch.no_grad()
    def get(self, model: torch.nn.Module, images: torch.Tensor, keys: Sequence[tuple[str, int]]) -> EncoderOutput:
        """Encoder outputs of a batch, from the cache where present (missing ones are encoded and stored).

        Args:
            model: the design (``encode_plain``).
            images: (B, 3, 256, 256) unaugmented model inputs of the slices (used on a cache miss).
            keys: B (case id, slice index) pairs.

        Returns:
            :class:`EncoderOutput` of batch B on ``images.device`` in float32; ``levels`` holds the cached
            levels at their indices (the others are empty placeholders).
        """
        rows: list[dict[str, torch.Tensor] | None] = []
        missing = []
        for i, (cid, z) in enumerate(keys):
            p = self.path(cid, z)
            if p.is_file():
                rows.append(self._load(p))
                self.hits += 1
            else:
                rows.append(None)
                missing.append(i)
        if missing:
            self.misses += len(missing)
            enc = model.encode_plain(images[missing])  # type: ignore[operator]
            for j, i in enumerate(missing):
                rows[i] = self._load(self.put(*keys[i], enc, j))
        dev = images.device
        emb = torch.stack([r["embedding"] for r in rows]).to(dev, torch.float32)  # type: ignore[index]
        levels: list[torch.Tensor] = []
        if self.levels:
            for lv in range(max(self.levels) + 1):
                if lv in self.levels:
                    levels.append(torch.stack([r[f"level_{lv}"] for r in rows]).to(dev, torch.float32))  # type: ignore[index]
                else:
                    levels.append(torch.empty(len(rows), 0, device=dev))
        return EncoderOutput(embedding=emb, levels=levels)
