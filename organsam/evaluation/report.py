"""Tables and charts of evaluation results: Markdown, CSV, JSON-ready dicts and PIL bar charts.

Tables have the shape of the papers' tables: rows are cases (one result) or methods (a comparison),
columns are the protocol's organs in its order plus the mean over organs. Dice and NSD are shown in
percent, HD95 in the evaluation's unit; ``n/a`` marks values left out of the means.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from organsam.evaluation.metrics import METRICS

if TYPE_CHECKING:
    from organsam.evaluation.evaluate import EvaluationResult

__all__ = [
    "bar_chart",
    "comparison_markdown",
    "format_value",
    "jsonable",
    "markdown_table",
    "result_markdown",
    "write_csv",
]

_CSV_FIELDS = ["method", "case", "organ", "dice", "hd95", "nsd", "tolerance_mm", "ref_voxels", "pred_voxels", "status"]
_PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]


def _metric(metric: str) -> tuple[str, str, float]:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    return METRICS[metric]


def _isnan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def format_value(x: float | None, metric: str, std: float | None = None) -> str:
    """Display text of a metric value (Dice/NSD in %, two decimals; ``n/a`` for NaN), optionally ``± std``."""
    if _isnan(x):
        return "n/a"
    scale = _metric(metric)[2]
    text = f"{x * scale:.2f}"
    if std is not None and not _isnan(std):
        text += f" ± {std * scale:.2f}"
    return text


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table (first column left-aligned, the others right-aligned)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _unit(result: EvaluationResult, metric: str) -> str:
    return result.hd95_unit if metric == "hd95" else _metric(metric)[1]


def result_markdown(result: EvaluationResult, title: str | None = None) -> str:
    """Markdown report of one result: description, then per metric a table with one row per case and a
    ``mean ± std`` row (columns: organs + mean over organs), then notes on left-out organs."""
    names = result.protocol.organ_names()
    header_organs = [names[o] for o in result.organs]
    summary = result.summary()
    parts = [f"## {title or f'{result.method} — protocol {result.protocol.name}'}", "", result.describe(), ""]
    for m in ("dice", "hd95", "nsd"):
        label = _metric(m)[0]
        rows = []
        for c in result.cases:
            rows.append(
                [c]
                + [format_value(result.value(c, o, m), m) for o in result.organs]
                + [format_value(summary[m]["cases"][c], m)]
            )
        organ_stats = summary[m]["organs"]
        rows.append(
            ["**mean ± std**" if len(result.cases) > 1 else "**mean**"]
            + [
                format_value(organ_stats[o]["mean"], m, organ_stats[o]["std"] if len(result.cases) > 1 else None)
                for o in result.organs
            ]
            + [f"**{format_value(summary[m]['mean'], m)}**"]
        )
        parts += [f"### {label} ({_unit(result, m)})", "", markdown_table(["case", *header_organs, "mean"], rows), ""]
    left_out = [
        f"{r['case']}/{r['organ']}: {r['status'].replace('_', ' ')}"
        for r in result.rows
        if r["status"] in ("not_predicted", "not_in_reference")
    ]
    empties = [
        f"{r['case']}/{r['organ']}: {r['status'].replace('_', ' ')}"
        for r in result.rows
        if r["status"] in ("both_empty", "ref_empty", "pred_empty")
    ]
    if left_out:
        parts.append("Left out (n/a): " + "; ".join(left_out) + ".")
    if empties:
        parts.append(f"Empty-mask cases (scored by the {result.rule} rule): " + "; ".join(empties) + ".")
    return "\n".join(parts).rstrip()


def comparison_markdown(
    results: Sequence[EvaluationResult], metric: str = "dice", labels: Sequence[str] | None = None
) -> str:
    """One table, rows = methods (their mean over cases per organ), columns = organs + mean over organs.

    Args:
        results: results under the same protocol (same organs).
        metric: ``dice``, ``hd95`` or ``nsd``.
        labels: row labels (default: each result's ``method``).
    """
    if not results:
        raise ValueError("comparison_markdown needs at least one result")
    first = results[0]
    if any(r.organs != first.organs for r in results):
        raise ValueError("results to compare must use the same protocol organs")
    names = first.protocol.organ_names()
    rows = []
    for i, r in enumerate(results):
        s = r.summary()[metric]
        label = labels[i] if labels is not None else r.method
        rows.append(
            [label]
            + [format_value(s["organs"][o]["mean"], metric) for o in r.organs]
            + [f"**{format_value(s['mean'], metric)}**"]
        )
    header = [f"{_metric(metric)[0]} ({_unit(first, metric)})", *[names[o] for o in first.organs], "mean"]
    return markdown_table(header, rows)


def jsonable(obj: Any) -> Any:
    """``obj`` with NaN/inf floats turned into None and numpy scalars into Python numbers (for json.dumps)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path, method: str = "") -> Path:
    """One line per (case, organ): method, case, organ, dice, hd95, nsd, tolerance_mm, ref_voxels,
    pred_voxels, status. NaN is written as an empty field."""
    p = Path(path)
    with p.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=_CSV_FIELDS)
        w.writeheader()
        for r in rows:
            line = {k: r.get(k) for k in _CSV_FIELDS}
            line["method"] = r.get("method", method)
            w.writerow({k: "" if _isnan(v) else (f"{v:.6g}" if isinstance(v, float) else v) for k, v in line.items()})
    return p


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: Any) -> tuple[int, int]:
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    return x1 - x0, y1 - y0


def bar_chart(
    results: Sequence[EvaluationResult],
    metric: str,
    path: str | Path,
    title: str | None = None,
    labels: Sequence[str] | None = None,
) -> Path:
    """Grouped bar chart (PNG, drawn with PIL): per organ (and the mean) one bar per result = mean over
    cases, with a ± std whisker when there are several cases.

    Args:
        results: one or more results under the same protocol.
        metric: ``dice``, ``hd95`` or ``nsd``.
        path: output PNG.
        title: chart title (default: metric and protocol).
        labels: legend labels (default: each result's ``method``).

    Returns:
        ``path``.
    """
    name, _, scale = _metric(metric)
    first = results[0]
    names = first.protocol.organ_names()
    cats = [*first.organs, "mean"]
    series = []
    for r in results:
        s = r.summary()[metric]
        vals = [
            (s["organs"][o]["mean"], s["organs"][o]["std"] if s["organs"][o]["n"] > 1 else math.nan)
            for o in first.organs
        ]
        vals.append((s["mean"], math.nan))
        series.append(
            [(v * scale if not _isnan(v) else math.nan, e * scale if not _isnan(e) else math.nan) for v, e in vals]
        )
    unit = _unit(first, metric)
    finite = [v + (0 if _isnan(e) else e) for ser in series for v, e in ser if not _isnan(v)]
    ymax = 100.0 if unit == "%" else max([1.0, *finite]) * 1.1
    n = len(series)
    bar_w = max(6, min(22, 60 // n))
    group_w = max(n * bar_w + 18, 78)
    left, right, top, bottom = 64, 24, 56, 70
    width = left + right + group_w * len(cats)
    height = 440
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    f_small, f_title = _font(12), _font(15)
    plot_h = height - top - bottom
    d.text(
        (left, 12), title or f"{name} ({unit}) per organ - protocol {first.protocol.name}", fill="black", font=f_title
    )
    for k in range(6):  # y grid and ticks
        yv = ymax * k / 5
        y = top + plot_h - plot_h * k / 5
        d.line([(left, y), (width - right, y)], fill=(225, 225, 225))
        tick = f"{yv:.0f}" if ymax >= 10 else f"{yv:.2f}"
        tw, th = _text_size(d, tick, f_small)
        d.text((left - tw - 6, y - th / 2 - 2), tick, fill="black", font=f_small)
    d.line([(left, top), (left, top + plot_h), (width - right, top + plot_h)], fill="black")
    for ci, cat in enumerate(cats):
        gx = left + ci * group_w + (group_w - n * bar_w) / 2
        for si, ser in enumerate(series):
            v, e = ser[ci]
            x0 = gx + si * bar_w
            if _isnan(v):
                d.text((x0 + 1, top + plot_h - 14), "-", fill="gray", font=f_small)
                continue
            y = top + plot_h - plot_h * min(v, ymax) / ymax
            d.rectangle([x0, y, x0 + bar_w - 2, top + plot_h], fill=_PALETTE[si % len(_PALETTE)])
            label_y = y
            if not _isnan(e):
                cx = x0 + (bar_w - 2) / 2
                ylo = top + plot_h - plot_h * max(v - e, 0) / ymax
                yhi = top + plot_h - plot_h * min(v + e, ymax) / ymax
                d.line([(cx, ylo), (cx, yhi)], fill="black")
                d.line([(cx - 3, yhi), (cx + 3, yhi)], fill="black")
                label_y = yhi
            if n == 1:
                tag = f"{v:.1f}"
                tw, th = _text_size(d, tag, f_small)
                d.text((x0 + (bar_w - 2 - tw) / 2, label_y - th - 6), tag, fill="black", font=f_small)
        label = "Mean" if cat == "mean" else names[cat]
        lines = label.split(" (") if len(label) > 11 and " (" in label else [label]
        lines = [lines[0]] + [f"({x}" for x in lines[1:]]
        for li, text in enumerate(lines):
            tw, _ = _text_size(d, text, f_small)
            d.text(
                (left + ci * group_w + (group_w - tw) / 2, top + plot_h + 6 + 15 * li), text, fill="black", font=f_small
            )
    legend = list(labels) if labels is not None else [r.method for r in results]
    lx, ly = left, height - 22
    for si, text in enumerate(legend):
        d.rectangle([lx, ly + 2, lx + 10, ly + 12], fill=_PALETTE[si % len(_PALETTE)])
        d.text((lx + 14, ly), text, fill="black", font=f_small)
        lx += 14 + _text_size(d, text, f_small)[0] + 18
    p = Path(path)
    img.save(p)
    return p
