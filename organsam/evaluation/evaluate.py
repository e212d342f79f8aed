"""``evaluate``: score predictions against reference label maps under a published protocol.

A prediction is one of:

- an ``organsam segment`` output folder: ``segmentation.nii.gz`` with the label table of ``report.json``
  (``"labels": {"1": "liver", ...}``); or, with ``pred_source="masks"`` / when there is no label map, its
  ``masks/<organ_id>.nii.gz`` files (per-organ masks before merging);
- a folder of ``<organ_id>.nii.gz`` masks;
- a label file (NIfTI/NRRD/MHA/npz/DICOM) with its label map (``pred_labelmap``: a packaged name such as
  ``"amos22"`` or a json file; a ``report.json`` beside the file is used when none is given).

References are label files with their label map (``ref_labelmap``, default: the protocol's). Organs are
matched by vocabulary id, so any reference map that labels the protocol's organs works (AMOS labels under
the Synapse-8 protocol, for example). Everything is compared on the reference's voxel grid with its real
spacing (see :mod:`organsam.evaluation.metrics`).

Several cases: give folders (``ref/<case>.nii.gz`` or ``ref/<case>/label.nii.gz``, paired with
``pred/<case>/`` or ``pred/<case>.nii.gz``) or equal-length lists of paths (paired in order).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from organsam.evaluation.metrics import METRICS, EmptyRule, empty_rule, score_organ
from organsam.evaluation.protocols import Protocol, get_protocol
from organsam.evaluation.report import bar_chart, jsonable, result_markdown, write_csv
from organsam.io import Volume, load_labels, load_volume
from organsam.vocabulary import labelmap_info, load_labelmap, load_vocabulary

logger = logging.getLogger(__name__)

__all__ = ["METRICS", "EvaluationError", "EvaluationResult", "evaluate", "load_prediction", "pair_cases",
           "score_case"]

PathLike = str | os.PathLike[str]

#: metric key -> (display title, unit shown in tables, scale for display)

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


def _values_for(mapping: Mapping[int, str | None], organ_id: str) -> list[int]:
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


def _label_table(labelmap: str | Mapping[int, str | None]) -> dict[int, str | None]:
    if isinstance(labelmap, Mapping):
        return {int(k): v for k, v in labelmap.items()}
    return dict(load_labelmap(str(labelmap)))


def _labelmap_name(labelmap: str | Mapping[int, str | None]) -> str:
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
        raise EvaluationError(f"{report}: cannot read the label table ('labels': {{value: organ id}}) of an "
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
        raise EvaluationError(f"{folder}: no <organ_id>.nii.gz mask files found; give an organsam output "
                              f"folder, a folder of per-organ masks or a label file")
    return out


def load_prediction(path: PathLike, like: Volume, labelmap: str | Mapping[int, str | None] | None = None,
                    source: str = "auto") -> dict[str, np.ndarray]:
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
            table = _label_table(labelmap) if labelmap is not None else _report_table(p / "report.json")
            return _masks_from_labels(load_labels(seg, like), table)
        if masks.is_dir() and source != "labelmap":
            return _load_masks_folder(masks, like)
        if source == "labelmap":
            raise EvaluationError(f"{p}: no segmentation.nii.gz in this folder (asked for the label map)")
        return _load_masks_folder(p, like)
    if labelmap is None:
        report = p.parent / "report.json"
        if not report.is_file():
            raise EvaluationError(f"{p}: a label file needs its label map: pass pred_labelmap "
                                  f"(--pred-labelmap), e.g. 'amos22' or a json file of value -> organ")
        table = _report_table(report)
    else:
        table = _label_table(labelmap)
    return _masks_from_labels(load_labels(p, like), table)


def _load_reference(path: Path, image: PathLike | None) -> tuple[Volume, np.ndarray]:
    like = load_volume(image) if image is not None else load_volume(path, modality="unknown", check_values=False)
    return like, load_labels(path, like)


# ---------------------------------------------------------------------------------------------- pairing
def _ref_cases(folder: Path) -> dict[str, Path]:
    cases: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if _is_label_file(f):
            cases[_stem(f)] = f
        elif f.is_dir():
            found = [g for g in sorted(f.iterdir())
                     if _is_label_file(g) and _stem(g).lower() in _GENERIC_STEMS]
            if found:
                cases[f.name] = found[0]
    return cases


def _is_prediction_folder(p: Path) -> bool:
    return (p / "segmentation.nii.gz").is_file() or (p / "masks").is_dir() or (p / "report.json").is_file()


def pair_cases(pred: PathLike | Sequence[PathLike], ref: PathLike | Sequence[PathLike]
               ) -> list[tuple[str, Path, Path]]:
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
        raise EvaluationError(f"{len(preds)} predictions but {len(refs)} references: give lists of equal "
                              f"length (paired in order) or two folders (paired by case name)")
    if len(refs) > 1:
        return [(_case_name(r), p, r) for p, r in zip(preds, refs)]
    p, r = preds[0], refs[0]
    if r.is_file():
        return [(_case_name(r), p, r)]
    cases = _ref_cases(r)
    if not cases:
        raise EvaluationError(f"{r}: no reference label files (<case>.nii.gz or <case>/label.nii.gz) found")
    if p.is_file() or _is_prediction_folder(p):
        raise EvaluationError(f"{p} is a single prediction but {r} holds {len(cases)} reference cases; give "
                              f"the reference label file of this case")
    out, missing = [], []
    for name, rp in cases.items():
        cand = [p / name] + [p / f"{name}{e}" for e in _LABEL_ENDINGS]
        hit = next((c for c in cand if c.exists()), None)
        if hit is None:
            missing.append(name)
        else:
            out.append((name, hit, rp))
    if missing:
        raise EvaluationError(f"no prediction in {p} for reference case(s) {', '.join(missing)} (looked for "
                              f"<case>/ and <case>.nii.gz); predict them or evaluate a sub-list of files")
    return out


# ---------------------------------------------------------------------------------------------- scoring
def score_case(pred_masks: Mapping[str, np.ndarray], ref_labels: np.ndarray, spacing: Sequence[float],
               protocol: str | Protocol, *, ref_labelmap: str | Mapping[int, str | None] | None = None,
               case: str = "case", rule: str | EmptyRule | None = None, hd95_unit: str = "mm"
               ) -> list[dict[str, Any]]:
    """Score one case: every protocol organ, prediction against reference.

    Args:
        pred_masks: organ id -> (Z, Y, X) bool predicted mask on the reference grid. An organ the prediction
            does not contain but whose parts it does (``adrenal_glands`` from both sides) is their union.
        ref_labels: (Z, Y, X) integer reference label map.
        spacing: (sz, sy, sx) in mm.
        protocol: protocol name or :class:`Protocol`.
        ref_labelmap: label map of ``ref_labels`` (default: the protocol's).
        case: case name for the rows.
        rule: empty-case rule (default: the protocol's).
        hd95_unit: ``"mm"`` or ``"voxels"``.

    Returns:
        One row per protocol organ: ``case, organ, dice, hd95, nsd, tolerance_mm, ref_voxels, pred_voxels,
        status`` where status is ``both`` / ``both_empty`` / ``ref_empty`` / ``pred_empty`` or, with NaN
        metrics, ``not_predicted`` (the prediction has no such organ) / ``not_in_reference`` (the reference
        label map does not label it).
    """
    proto = get_protocol(protocol)
    er = empty_rule(rule or proto.empty_rule)
    table = _label_table(ref_labelmap if ref_labelmap is not None else proto.labelmap)
    ref = np.asarray(ref_labels)
    vocab = load_vocabulary()
    rows: list[dict[str, Any]] = []
    for oid in proto.organs:
        base: dict[str, Any] = {"case": case, "organ": oid}
        values = _values_for(table, oid)
        mask = pred_masks.get(oid)
        if mask is None:
            parts = [pred_masks[o] for o in vocab.expand_parts(oid) if o != oid and o in pred_masks]
            mask = np.logical_or.reduce(parts) if parts else None
        if not values or mask is None:
            status = "not_in_reference" if not values else "not_predicted"
            logger.warning("%s: %s %s; left out", case, oid, status.replace("_", " "))
            rows.append({**base, "dice": math.nan, "hd95": math.nan, "nsd": math.nan,
                         "tolerance_mm": math.nan, "ref_voxels": None, "pred_voxels": None, "status": status})
            continue
        if mask.shape != ref.shape:
            raise EvaluationError(f"{case}: predicted {oid} mask {mask.shape} is not on the reference grid "
                                  f"{ref.shape}")
        s = score_organ(mask, np.isin(ref, values), spacing, organ_id=oid, rule=er, hd95_unit=hd95_unit)
        rows.append({**base, "dice": s.dice, "hd95": s.hd95, "nsd": s.nsd, "tolerance_mm": s.tolerance_mm,
                     "ref_voxels": s.ref_voxels, "pred_voxels": s.pred_voxels, "status": s.status})
    return rows


def _stats(values: list[float]) -> dict[str, Any]:
    v = np.array([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}


@dataclass
class EvaluationResult:
    """Per-case, per-organ scores of one method under one protocol.

    Attributes:
        protocol: the :class:`Protocol`.
        method: name of the evaluated method (a table row label in comparisons).
        rows: one dict per (case, organ), see :func:`score_case`.
        rule: name of the empty-case rule applied.
        hd95_unit: ``"mm"`` or ``"voxels"``.
        ref_labelmap: name of the reference label map used.
        meta: free-form details (inputs, timings) stored in the JSON output.
    """

    protocol: Protocol
    method: str
    rows: list[dict[str, Any]]
    rule: str
    hd95_unit: str = "mm"
    ref_labelmap: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def cases(self) -> list[str]:
        """Case names in order."""
        return list(dict.fromkeys(r["case"] for r in self.rows))

    @property
    def organs(self) -> list[str]:
        """Protocol organ ids in table order."""
        return list(self.protocol.organs)

    def value(self, case: str, organ: str, metric: str) -> float:
        """One metric value (NaN = n/a)."""
        for r in self.rows:
            if r["case"] == case and r["organ"] == organ:
                return float(r[metric])
        return math.nan

    def summary(self) -> dict[str, Any]:
        """Per metric: per organ ``{mean, std, n}`` over cases, ``mean`` (of the organ means) and per case
        the mean over organs. NaN (n/a) values are left out everywhere."""
        out: dict[str, Any] = {}
        for m in METRICS:
            organs = {o: _stats([r[m] for r in self.rows if r["organ"] == o]) for o in self.organs}
            means = [s["mean"] for s in organs.values()]
            per_case = {c: _stats([r[m] for r in self.rows if r["case"] == c])["mean"] for c in self.cases}
            out[m] = {"organs": organs, "mean": _stats(means)["mean"], "cases": per_case}
        return out

    def describe(self) -> str:
        """The protocol description for this evaluation's rule and unit."""
        return self.protocol.describe(self.hd95_unit, self.rule)

    def to_markdown(self, title: str | None = None) -> str:
        """Markdown report: description, one table per metric (rows = cases + mean, columns = organs +
        mean)."""
        return result_markdown(self, title)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content (NaN written as null)."""
        return jsonable({"protocol": self.protocol.name, "method": self.method, "empty_rule": self.rule,
                         "hd95_unit": self.hd95_unit, "ref_labelmap": self.ref_labelmap,
                         "description": self.describe(), "organs": self.organs, "cases": self.cases,
                         "rows": self.rows, "summary": self.summary(), "meta": self.meta})

    def save(self, outdir: PathLike, charts: bool = True) -> dict[str, Path]:
        """Write ``evaluation.md``, ``evaluation.csv`` (one row per case and organ), ``evaluation.json`` and
        bar charts ``dice.png``, ``hd95.png``, ``nsd.png`` (per-organ mean ± std) into ``outdir``.

        Returns:
            name -> written path.
        """
        out = Path(outdir).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        written = {"markdown": out / "evaluation.md", "csv": out / "evaluation.csv",
                   "json": out / "evaluation.json"}
        written["markdown"].write_text(self.to_markdown() + "\n", encoding="utf-8")
        write_csv(self.rows, written["csv"], method=self.method)
        written["json"].write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        if charts:
            for m in METRICS:
                written[f"{m}_png"] = bar_chart([self], m, out / f"{m}.png")
        return written


def evaluate(pred: PathLike | Sequence[PathLike], ref: PathLike | Sequence[PathLike],
             protocol: str | Protocol = "synapse8", *,
             ref_labelmap: str | Mapping[int, str | None] | None = None,
             pred_labelmap: str | Mapping[int, str | None] | None = None,
             image: PathLike | Sequence[PathLike] | None = None, empty: str | None = None,
             hd95_unit: str = "mm", method: str = "organsam", pred_source: str = "auto",
             output: PathLike | None = None) -> EvaluationResult:
    """Evaluate predictions against references under a published protocol.

    Args:
        pred: prediction(s): organsam output folder, masks folder, label file, a folder of those per case, or
            a list (see the module docstring).
        ref: reference label file(s), a folder of them, or a list paired in order with ``pred``.
        protocol: ``synapse8``, ``btcv13``, ``amos15``, ``word16`` or ``flare13`` (or a :class:`Protocol`).
        ref_labelmap: label map of the references (default: the protocol's); packaged name, json path or
            mapping value -> organ id.
        pred_labelmap: label map of prediction label files (output folders carry theirs in report.json).
        image: the image(s) the references belong to (one per case); default: the reference label file's own
            grid is used as the image grid.
        empty: empty-case rule (``strict``, ``transunet``, ``monai``); default: the protocol's.
        hd95_unit: ``"mm"`` (default) or ``"voxels"``.
        method: name shown for this prediction in tables.
        pred_source: for output folders: ``auto``, ``labelmap`` or ``masks``.
        output: folder to write the report files to (see :meth:`EvaluationResult.save`); None: none.

    Returns:
        The :class:`EvaluationResult`.
    """
    t0 = time.perf_counter()
    proto = get_protocol(protocol)
    rule = empty_rule(empty or proto.empty_rule).name
    ref_map = ref_labelmap if ref_labelmap is not None else proto.labelmap
    pairs = pair_cases(pred, ref)
    images: list[PathLike | None]
    if image is None:
        images = [None] * len(pairs)
    else:
        images = [image] if isinstance(image, (str, os.PathLike)) else list(image)
        if len(images) != len(pairs):
            raise EvaluationError(f"{len(images)} image(s) for {len(pairs)} case(s): give one image per case")
    rows: list[dict[str, Any]] = []
    for (case, p, r), img in zip(pairs, images):
        like, labels = _load_reference(r, img)
        masks = load_prediction(p, like, pred_labelmap, pred_source)
        logger.info("%s: prediction %s (%d organs) vs reference %s", case, p, len(masks), r)
        rows.extend(score_case(masks, labels, like.spacing, proto, ref_labelmap=ref_map, case=case, rule=rule,
                               hd95_unit=hd95_unit))
    pairs_meta = [{"case": c, "pred": str(p), "ref": str(r)} for c, p, r in pairs]
    result = EvaluationResult(proto, method, rows, rule, hd95_unit, _labelmap_name(ref_map),
                              meta={"pairs": pairs_meta, "seconds": round(time.perf_counter() - t0, 2)})
    if output is not None:
        result.save(output)
    return result
