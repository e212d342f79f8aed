"""The cases of an evaluation: prediction and reference files found, paired by case name and read (label maps,
mask folders, ``report.json`` label tables), for :func:`organsam.evaluation.evaluate.evaluate`."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from organsam.io import Volume, load_labels, load_volume
from organsam.vocabulary import labelmap_info, load_labelmap, load_vocabulary

logger = logging.getLogger(__name__)

__all__ = [
    "EvaluationError",
    "PathLike",
    "label_table",
    "labelmap_name",
    "load_prediction",
    "load_reference",
    "pair_cases",
    "values_for",
]

PathLike = str | os.PathLike[str]

_LABEL_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".npz")
_GENERIC_STEMS = {"label", "labels", "seg", "segmentation", "gt", "mask", "reference", "ground_truth"}


class EvaluationError(ValueError):
    """Inputs that cannot be evaluated (unpairable cases, prediction without label table, ...)."""


def _stem(path: Path) -> str:
    name = path.name
    for end in _LABEL_ENDINGS:
        if name.lower().endswith(end):
            return name[: -len(end)]
    return path.stem


def _is_label_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_LABEL_ENDINGS)


def _case_name(path: Path) -> str:
    stem = _stem(path)
    return path.parent.name if stem.lower() in _GENERIC_STEMS and path.parent.name else stem


def values_for(mapping: Mapping[int, str | None], organ_id: str) -> list[int]:
    """Label values whose union is ``organ_id`` (its own values, else those of its parts)."""
    direct = [v for v, o in mapping.items() if o == organ_id]
    if direct:
        return direct
    vocab = load_vocabulary()
    try:
        wanted = set(vocab.expand_parts(organ_id))
    except KeyError:
        return []
    out = []
    for v, o in mapping.items():
        if o is None or o not in vocab:
            continue
        leaves = set(vocab.expand_parts(o))
        if leaves & wanted and leaves <= wanted:
            out.append(v)
    return out


def label_table(labelmap: str | Mapping[int, str | None]) -> dict[int, str | None]:
    if isinstance(labelmap, Mapping):
        return {int(k): v for k, v in labelmap.items()}
    return dict(load_labelmap(str(labelmap)))


def labelmap_name(labelmap: str | Mapping[int, str | None]) -> str:
    if isinstance(labelmap, Mapping):
        return "custom"
    try:
        return labelmap_info(str(labelmap)).name
    except ValueError:
        return str(labelmap)


# ---------------------------------------------------------------------------------------------- loading
def _masks_from_labels(labels: np.ndarray, table: Mapping[int, str | None]) -> dict[str, np.ndarray]:
    by_organ: dict[str, list[int]] = {}
    for v, o in table.items():
        if o is not None and int(v) != 0:
            by_organ.setdefault(o, []).append(int(v))
    return {o: np.isin(labels, vals) for o, vals in by_organ.items()}


def _report_table(report: Path) -> dict[int, str]:
    try:
        doc = json.loads(report.read_text(encoding="utf-8"))
        return {int(k): str(v) for k, v in doc["labels"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise EvaluationError(
            f"{report}: cannot read the label table ('labels': {{value: organ id}}) of an "
            f"organsam report ({type(e).__name__}: {e}); give --pred-labelmap instead"
        ) from e


def _load_masks_folder(folder: Path, like: Volume) -> dict[str, np.ndarray]:
    vocab = load_vocabulary()
    out: dict[str, np.ndarray] = {}
    for f in sorted(folder.iterdir()):
        if not _is_label_file(f):
            continue
        oid = _stem(f)
        if oid not in vocab:
            logger.warning("%s: %r is not a vocabulary organ id; file ignored", f, oid)
            continue
        out[oid] = load_labels(f, like) != 0
    if not out:
        raise EvaluationError(
            f"{folder}: no <organ_id>.nii.gz mask files found; give an organsam output "
            f"folder, a folder of per-organ masks or a label file"
        )
    return out


def load_prediction(
    path: PathLike, like: Volume, labelmap: str | Mapping[int, str | None] | None = None, source: str = "auto"
) -> dict[str, np.ndarray]:
    """Read a prediction onto the grid of ``like`` as per-organ masks.

    Args:
        path: organsam output folder, folder of ``<organ_id>.nii.gz`` masks, or a label file.
        like: the reference grid (a Volume: the image, or the reference label file loaded as a volume).
        labelmap: label value -> organ id of a label file (packaged name, json path or mapping); default for
            an output folder: its ``report.json`` table.
        source: ``"auto"`` (label map ``segmentation.nii.gz`` of an output folder, else its masks),
            ``"labelmap"`` or ``"masks"``.

    Returns:
        organ id -> (Z, Y, X) bool mask in the canonical layout.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        EvaluationError: no label table for a label file, or nothing to read.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"prediction {p} does not exist")
    if source not in ("auto", "labelmap", "masks"):
        raise ValueError(f"pred source must be auto, labelmap or masks, got {source!r}")
    if p.is_dir():
        seg, masks = p / "segmentation.nii.gz", p / "masks"
        if seg.is_file() and source != "masks":
            table = label_table(labelmap) if labelmap is not None else _report_table(p / "report.json")
            return _masks_from_labels(load_labels(seg, like), table)
        if masks.is_dir() and source != "labelmap":
            return _load_masks_folder(masks, like)
        if source == "labelmap":
            raise EvaluationError(f"{p}: no segmentation.nii.gz in this folder (asked for the label map)")
        return _load_masks_folder(p, like)
    if labelmap is None:
        report = p.parent / "report.json"
        if not report.is_file():
            raise EvaluationError(
                f"{p}: a label file needs its label map: pass pred_labelmap "
                f"(--pred-labelmap), e.g. 'amos22' or a json file of value -> organ"
            )
        table = _report_table(report)
    else:
        table = label_table(labelmap)
    return _masks_from_labels(load_labels(p, like), table)


def load_reference(path: Path, image: PathLike | None) -> tuple[Volume, np.ndarray]:
    like = load_volume(image) if image is not None else load_volume(path, modality="unknown", check_values=False)
    return like, load_labels(path, like)


# ---------------------------------------------------------------------------------------------- pairing
def _ref_cases(folder: Path) -> dict[str, Path]:
    cases: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if _is_label_file(f):
            cases[_stem(f)] = f
        elif f.is_dir():
            found = [g for g in sorted(f.iterdir()) if _is_label_file(g) and _stem(g).lower() in _GENERIC_STEMS]
            if found:
                cases[f.name] = found[0]
    return cases


def _is_prediction_folder(p: Path) -> bool:
    return (p / "segmentation.nii.gz").is_file() or (p / "masks").is_dir() or (p / "report.json").is_file()


def pair_cases(pred: PathLike | Sequence[PathLike], ref: PathLike | Sequence[PathLike]) -> list[tuple[str, Path, Path]]:
    """Pair predictions with references.

    Args:
        pred: one prediction (output folder / masks folder / label file), a folder of them (one per case:
            ``<case>/`` or ``<case>.nii.gz``), or a list.
        ref: one reference label file, a folder (``<case>.nii.gz`` or ``<case>/label.nii.gz``), or a list
            as long as ``pred``.

    Returns:
        ``(case name, prediction path, reference path)`` in case order.

    Raises:
        FileNotFoundError: a path does not exist.
        EvaluationError: the inputs cannot be paired (different list lengths, cases without prediction).
    """
    preds = [Path(p).expanduser() for p in ([pred] if isinstance(pred, (str, os.PathLike)) else pred)]
    refs = [Path(r).expanduser() for r in ([ref] if isinstance(ref, (str, os.PathLike)) else ref)]
    for p in (*preds, *refs):
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
    if len(preds) != len(refs):
        raise EvaluationError(
            f"{len(preds)} predictions but {len(refs)} references: give lists of equal "
            f"length (paired in order) or two folders (paired by case name)"
        )
    if len(refs) > 1:
        return [(_case_name(r), p, r) for p, r in zip(preds, refs)]
    p, r = preds[0], refs[0]
    if r.is_file():
        return [(_case_name(r), p, r)]
    cases = _ref_cases(r)
    if not cases:
        raise EvaluationError(f"{r}: no reference label files (<case>.nii.gz or <case>/label.nii.gz) found")
    if p.is_file() or _is_prediction_folder(p):
        raise EvaluationError(
            f"{p} is a single prediction but {r} holds {len(cases)} reference cases; give "
            f"the reference label file of this case"
        )
    out, missing = [], []
    for name, rp in cases.items():
        cand = [p / name] + [p / f"{name}{e}" for e in _LABEL_ENDINGS]
        hit = next((c for c in cand if c.exists()), None)
        if hit is None:
            missing.append(name)
        else:
            out.append((name, hit, rp))
    if missing:
        raise EvaluationError(
            f"no prediction in {p} for reference case(s) {', '.join(missing)} (looked for "
            f"<case>/ and <case>.nii.gz); predict them or evaluate a sub-list of files"
        )
    return out


# ---------------------------------------------------------------------------------------------- scoring
