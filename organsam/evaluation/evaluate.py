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

from organsam.evaluation.cases import (
    EvaluationError,
    PathLike,
    label_table,
    labelmap_name,
    load_prediction,
    load_reference,
    pair_cases,
    values_for,
)
from organsam.evaluation.metrics import METRICS, EmptyRule, empty_rule, score_organ
from organsam.evaluation.protocols import Protocol, get_protocol
from organsam.evaluation.report import bar_chart, jsonable, result_markdown, write_csv
from organsam.vocabulary import load_vocabulary

logger = logging.getLogger(__name__)

__all__ = ["METRICS", "EvaluationError", "EvaluationResult", "evaluate", "load_prediction", "pair_cases", "score_case"]


def score_case(
    pred_masks: Mapping[str, np.ndarray],
    ref_labels: np.ndarray,
    spacing: Sequence[float],
    protocol: str | Protocol,
    *,
    ref_labelmap: str | Mapping[int, str | None] | None = None,
    case: str = "case",
    rule: str | EmptyRule | None = None,
    hd95_unit: str = "mm",
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
    table = label_table(ref_labelmap if ref_labelmap is not None else proto.labelmap)
    ref = np.asarray(ref_labels)
    vocab = load_vocabulary()
    rows: list[dict[str, Any]] = []
    for oid in proto.organs:
        base: dict[str, Any] = {"case": case, "organ": oid}
        values = values_for(table, oid)
        mask = pred_masks.get(oid)
        if mask is None:
            parts = [pred_masks[o] for o in vocab.expand_parts(oid) if o != oid and o in pred_masks]
            mask = np.logical_or.reduce(parts) if parts else None
        if not values or mask is None:
            status = "not_in_reference" if not values else "not_predicted"
            logger.warning("%s: %s %s; left out", case, oid, status.replace("_", " "))
            rows.append(
                {
                    **base,
                    "dice": math.nan,
                    "hd95": math.nan,
                    "nsd": math.nan,
                    "tolerance_mm": math.nan,
                    "ref_voxels": None,
                    "pred_voxels": None,
                    "status": status,
                }
            )
            continue
        if mask.shape != ref.shape:
            raise EvaluationError(f"{case}: predicted {oid} mask {mask.shape} is not on the reference grid {ref.shape}")
        s = score_organ(mask, np.isin(ref, values), spacing, organ_id=oid, rule=er, hd95_unit=hd95_unit)
        rows.append(
            {
                **base,
                "dice": s.dice,
                "hd95": s.hd95,
                "nsd": s.nsd,
                "tolerance_mm": s.tolerance_mm,
                "ref_voxels": s.ref_voxels,
                "pred_voxels": s.pred_voxels,
                "status": s.status,
            }
        )
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
        return jsonable(
            {
                "protocol": self.protocol.name,
                "method": self.method,
                "empty_rule": self.rule,
                "hd95_unit": self.hd95_unit,
                "ref_labelmap": self.ref_labelmap,
                "description": self.describe(),
                "organs": self.organs,
                "cases": self.cases,
                "rows": self.rows,
                "summary": self.summary(),
                "meta": self.meta,
            }
        )

    def save(self, outdir: PathLike, charts: bool = True) -> dict[str, Path]:
        """Write ``evaluation.md``, ``evaluation.csv`` (one row per case and organ), ``evaluation.json`` and
        bar charts ``dice.png``, ``hd95.png``, ``nsd.png`` (per-organ mean ± std) into ``outdir``.

        Returns:
            name -> written path.
        """
        out = Path(outdir).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        written = {"markdown": out / "evaluation.md", "csv": out / "evaluation.csv", "json": out / "evaluation.json"}
        written["markdown"].write_text(self.to_markdown() + "\n", encoding="utf-8")
        write_csv(self.rows, written["csv"], method=self.method)
        written["json"].write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        if charts:
            for m in METRICS:
                written[f"{m}_png"] = bar_chart([self], m, out / f"{m}.png")
        return written


def evaluate(
    pred: PathLike | Sequence[PathLike],
    ref: PathLike | Sequence[PathLike],
    protocol: str | Protocol = "synapse8",
    *,
    ref_labelmap: str | Mapping[int, str | None] | None = None,
    pred_labelmap: str | Mapping[int, str | None] | None = None,
    image: PathLike | Sequence[PathLike] | None = None,
    empty: str | None = None,
    hd95_unit: str = "mm",
    method: str = "organsam",
    pred_source: str = "auto",
    output: PathLike | None = None,
) -> EvaluationResult:
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
        like, labels = load_reference(r, img)
        masks = load_prediction(p, like, pred_labelmap, pred_source)
        logger.info("%s: prediction %s (%d organs) vs reference %s", case, p, len(masks), r)
        rows.extend(
            score_case(
                masks, labels, like.spacing, proto, ref_labelmap=ref_map, case=case, rule=rule, hd95_unit=hd95_unit
            )
        )
    pairs_meta = [{"case": c, "pred": str(p), "ref": str(r)} for c, p, r in pairs]
    result = EvaluationResult(
        proto,
        method,
        rows,
        rule,
        hd95_unit,
        labelmap_name(ref_map),
        meta={"pairs": pairs_meta, "seconds": round(time.perf_counter() - t0, 2)},
    )
    if output is not None:
        result.save(output)
    return result
