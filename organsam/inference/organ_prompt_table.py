"""The organ prompt table: learned prompt tokens per organ, as the inference pipeline uses them.

A trained :mod:`organ_prompts <organsam.model.designs.organ_prompts>` checkpoint is exported to one small
safetensors file holding, for every vocabulary organ, the (T, 256) tokens its text embedding maps to
(``tokens`` (K, T, 256) plus the organ ids and provenance in the metadata). Inference then needs neither the
text encoder nor the design: :class:`~organsam.inference.volume_predictor.VolumePredictor` appends an organ's
tokens to each box prompt of that organ. The package ships the default table
(``organsam/assets/organ_prompts.safetensors``, SHA-256 checked, weight name ``organ_prompts``).

Export (what ``scripts/train_default.sh`` runs after training)::

    organsam prompts export runs/organ_prompts/model.safetensors out.safetensors
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from organsam.io.files import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["OrganPromptTable", "compare_tables", "export_prompt_table", "load_prompt_table"]

_FORMAT = "organsam-organ-prompt-table-v1"


class OrganPromptTable:
    """Prompt tokens per organ id.

    Args:
        tokens: (K, T, 256) float tokens.
        organ_ids: the K organ ids, in row order.
        metadata: provenance (design, training command, text encoder fingerprint, ...).
        path: the file it was read from, if any.
    """

    def __init__(
        self,
        tokens: torch.Tensor,
        organ_ids: list[str],
        metadata: dict[str, str] | None = None,
        path: Path | None = None,
    ) -> None:
        if tokens.ndim != 3 or tokens.shape[0] != len(organ_ids) or tokens.shape[2] != 256:
            raise ValueError(f"tokens must be (K={len(organ_ids)}, T, 256), got {tuple(tokens.shape)}")
        self.tokens = tokens.float().contiguous()
        self.organ_ids = list(organ_ids)
        self._row = {oid: i for i, oid in enumerate(self.organ_ids)}
        self.metadata = dict(metadata or {})
        self.path = path

    @property
    def num_tokens(self) -> int:
        """T, tokens per organ."""
        return int(self.tokens.shape[1])

    def __contains__(self, organ_id: object) -> bool:
        return organ_id in self._row

    def lookup(self, organ_ids: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
        """(P, T, 256) tokens of P organ ids.

        Raises:
            KeyError: an organ id the table does not hold.
        """
        missing = [o for o in organ_ids if o not in self._row]
        if missing:
            raise KeyError(f"organ prompt table {self.path or ''} has no tokens for {missing}")
        idx = torch.tensor([self._row[o] for o in organ_ids], dtype=torch.long)
        return self.tokens[idx].to(device)


def load_prompt_table(path: str | os.PathLike[str] | None = None, check_hash: bool | None = None) -> OrganPromptTable:
    """Read a table; ``None`` reads the packaged default (its SHA-256 checked against ``organsam.weights``).

    Args:
        path: a file written by :func:`export_prompt_table`, or ``None``.
        check_hash: verify the SHA-256 (default: only for the packaged table).

    Raises:
        organsam.weights.WeightsError: the packaged table is missing or its hash differs.
        ValueError: the file is not an organ prompt table.
    """
    from safetensors import safe_open

    from organsam.weights import find_weight

    p = find_weight("organ_prompts", path, check_hash=check_hash if check_hash is not None else path is None)
    hint = "export one with python -m organsam.inference.organ_prompt_table CHECKPOINT OUT"
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
            if meta.get("format") != _FORMAT:
                raise ValueError(
                    f"{p}: not an organ prompt table (format {meta.get('format')!r}, expected {_FORMAT!r}); {hint}"
                )
            tokens = f.get_tensor("tokens")
    except ValueError:
        raise
    except Exception as e:  # safetensors raises several types for a corrupt file
        raise ValueError(f"{p}: not a readable safetensors file ({e}); {hint}") from e
    organ_ids = json.loads(meta["organ_ids"])
    logger.info("organ prompt table %s: %d organs x %d tokens", p, len(organ_ids), tokens.shape[1])
    return OrganPromptTable(tokens, organ_ids, meta, Path(p))


def export_prompt_table(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], command: str = "") -> Path:
    """Write the prompt table of a trained ``organ_prompts`` checkpoint (atomically).

    Args:
        checkpoint: tensor file written by the trainer (``runs/organ_prompts/model.safetensors``).
        out: table file to write; must not be the checkpoint itself.
        command: the command that trained the checkpoint (stored as provenance).

    Returns:
        The written path.
    """
    from safetensors.torch import save_file

    from organsam.model.checkpoint import load_checkpoint, read_checkpoint_info

    src, dst = Path(checkpoint), Path(out)
    if src.resolve() == dst.resolve():
        raise ValueError(f"{dst}: the table would overwrite its checkpoint; choose another output path")
    model = load_checkpoint(src, design="organ_prompts")
    cfg = model.config  # type: ignore[attr-defined]
    if getattr(model, "lora_layers", None) or not (cfg.freeze_mask_decoder and cfg.freeze_prompt_encoder):
        raise ValueError(
            f"{src}: this organ_prompts checkpoint also changed the SAM core (LoRA adapters or a trained "
            f"prompt encoder / mask decoder), which a prompt table cannot carry; load the checkpoint "
            f"itself (organsam.model.checkpoint.load_checkpoint) or retrain with the core frozen"
        )
    table = model.prompt_table()  # type: ignore[operator]
    ids = list(table)
    info = read_checkpoint_info(src)
    meta = {
        "format": _FORMAT,
        "organ_ids": json.dumps(ids),
        "design": "organ_prompts",
        "text_fingerprint": str(model.text_fingerprint),
        "command": command,
        "checkpoint_step": str((info.get("extra") or {}).get("step", "")),
    }
    with atomic_path(dst) as tmp:
        save_file({"tokens": torch.stack([table[o] for o in ids]).contiguous()}, str(tmp), metadata=meta)
    logger.info("wrote the organ prompt table of %s (%d organs) to %s", src, len(ids), dst)
    return dst


def compare_tables(a: OrganPromptTable, b: OrganPromptTable) -> dict[str, float]:
    """How far two tables' tokens are apart, over the organs both hold.

    Returns:
        ``max_abs`` (largest absolute token difference), ``rel`` (that over the largest absolute token of ``a``),
        ``organs`` (how many organs were compared).

    Raises:
        ValueError: the tables share no organ or their tokens differ in shape.
    """
    common = [o for o in a.organ_ids if o in set(b.organ_ids)]
    if not common:
        raise ValueError(f"tables {a.path} and {b.path} hold no common organ")
    ta, tb = a.lookup(common).float(), b.lookup(common).float()
    if ta.shape != tb.shape:
        raise ValueError(f"token shapes differ: {tuple(ta.shape)} vs {tuple(tb.shape)}")
    diff = float((ta - tb).abs().max())
    return {"max_abs": diff, "rel": diff / max(float(ta.abs().max()), 1e-12), "organs": float(len(common))}
