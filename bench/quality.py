"""Validation table of what organsam ships (pipeline and packaged checkpoint; trains nothing), AMOS, manual labels.

Rows, so that each part's contribution is visible (Synapse-8 organs, AMOS reference labels):

- (a) LiteMedSAM prompted with oracle boxes from the reference labels on every reference slice (upper
  bound of the SAM core): tight boxes, and boxes widened by 10 px. No IoU rejection, no post-processing.
- (b) the atlas prior alone: the ts_a atlas registered onto the CT, its warped organ masks.
- (c) the shipped pipeline: ``organsam.segment`` with a text prompt only (atlas boxes -> LiteMedSAM ->
  predicted-IoU rejection -> track refinement -> post-processing -> merged label map); and the same with the
  learned organ prompt tokens of the shipped checkpoint added to every box (what the trained part adds; off by
  default in ``segment``).
- (e) with ``--checkpoint PATH``: a design trained by ``organsam train`` run by ``segment(design=...,
  checkpoint=...)``, given the text and the atlas boxes, or the text alone on every slice.
- (d) (c) without track refinement, box widening and box expansion (the prior pass alone); and that prior pass
  without post-processing, and without the IoU rejection (``iou_threshold=0``).

All model rows are scored as merged label maps (one label per voxel, as in ``segmentation.nii.gz``);
every row reuses the same slice embeddings and the same atlas registration, so differences between rows
are due to the part that changes only. The last two rows (d) are derived from one ``iou_threshold=0``
prior pass (slices are decoded independently); the derivation is checked against ``segment``'s output
without track refinement. Metrics: ``organsam.evaluation`` (MONAI Dice, HD95 in mm, NSD at organ tolerances; empty rule
``strict``).

    .venv/bin/python bench/quality.py [--cases amos_0013_slab amos_0001_slab] [--fast] [--json out.json]
        [--rows organsam no_track_refine ...] [--precision fp32|bf16] [--decoder-precision fp32|bf16]
        [--organ-prompts PATH]

``--organ-prompts`` scores another exported organ prompt table in that row instead of the packaged one (e.g. one trained
without ``amos_0001``, for a leave-one-patient-out figure on that case).
``--precision`` / ``--decoder-precision`` set the model rows' encoder / decoder compute precision (as
``organsam segment --fast`` does with bf16), to measure what a faster setting costs in Dice.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _common import CachedPredictor  # noqa: E402

from organsam.evaluation import EvaluationResult, comparison_markdown, get_protocol, score_case  # noqa: E402
from organsam.evaluation.report import bar_chart, format_value, jsonable, markdown_table  # noqa: E402
from organsam.inference.options import SegmentOptions  # noqa: E402
from organsam.inference.organ_prompt_table import load_prompt_table  # noqa: E402
from organsam.inference.postprocess import merge_labels, postprocess_mask  # noqa: E402
from organsam.inference.predictor_factory import build_predictor  # noqa: E402
from organsam.inference.runtimes import RUNTIMES  # noqa: E402
from organsam.inference.segment import segment  # noqa: E402
from organsam.inference.state import InferenceState  # noqa: E402
from organsam.inference.volume_predictor import VolumePredictor  # noqa: E402
from organsam.io import Volume, load_labels, load_volume  # noqa: E402
from organsam.model.sam_core import build_lite_medsam  # noqa: E402
from organsam.preprocessing.intensity import is_ct_in_hu  # noqa: E402
from organsam.priors import AtlasPrior, default_atlas, mask_to_boxes  # noqa: E402
from organsam.vocabulary import labelmap_info  # noqa: E402

logger = logging.getLogger("bench.quality")

REF_LABELMAP = "amos22"
RULE = "strict"
ROWS: dict[str, str] = {
    "oracle_tight": "(a) LiteMedSAM + oracle boxes, tight",
    "oracle_10px": "(a) LiteMedSAM + oracle boxes, +10 px",
    "atlas": "(b) atlas masks alone (ts_a registered)",
    "organsam": "(c) organsam: atlas boxes + LiteMedSAM (segment, text prompt)",
    "no_joint_assignment": "(c) without joint assignment (masks drawn on an anchor organ kept)",
    "no_anchor_refit": "(c) without anchor re-placement (the prior stays where registration put it)",
    "no_verification": "(c) without verification (masks bigger than the organ can be kept)",
    "no_trim_ends": "(c) without organ-end trimming (end slices of another tissue kept)",
    "box_search": "(c) + box search on CT (prior boxes decoded again with sides pulled in; default on MR only)",
    "no_expand_boxes": "(c) without box expansion off the anchors (non-anchor prior boxes decoded as placed)",
    "no_shared_structures": "(c) without shared-structure assignment (two non-anchor organs may draw one structure)",
    "no_anatomical_order": "(c) without anatomical order (an organ drawn on the organ in front of it kept)",
    "organ_prompts": "(c) + learned organ prompt tokens (shipped checkpoint, opt-in: --organ-prompts packaged)",
    "checkpoint_prior": "(e) trained design checkpoint (--checkpoint): text + atlas boxes",
    "checkpoint_text": "(e) trained design checkpoint (--checkpoint): text only, every slice",
    "no_track_refine": "(d) (c) without track refinement, box widening and box expansion (prior pass only)",
    "no_postprocess": "(d) prior pass without post-processing",
    "no_iou_rejection": "(d) prior pass without IoU rejection (iou_threshold=0)",
}


class FixedPrior:
    """A location prior whose ``fit`` returns a result computed beforehand (shared by all rows)."""

    def __init__(self, fitted: Any) -> None:
        self.fitted = fitted

    def fit(self, array: np.ndarray, spacing: tuple[float, float, float]) -> Any:
        return self.fitted


class OracleBoxes:
    """Per-slice boxes of the reference masks, widened by a fixed margin (the requested margin is ignored)."""

    def __init__(self, masks: dict[str, np.ndarray], margin_px: int) -> None:
        self.masks = masks
        self.margin_px = margin_px

    def present(self, organ_id: str) -> bool:
        return organ_id in self.masks and bool(self.masks[organ_id].any())

    def boxes(self, organ_id: str, margin_px: int = 0) -> dict[int, tuple[int, int, int, int]]:
        return mask_to_boxes(self.masks[organ_id], self.margin_px) if self.present(organ_id) else {}


def _label_masks(labels: np.ndarray, table: dict[int, str]) -> dict[str, np.ndarray]:
    return {oid: labels == v for v, oid in table.items()}


def _propagate(predictor: VolumePredictor, vol: Volume, organs: list[str]) -> InferenceState:
    """Text prompts placed by the predictor's prior, propagated through the volume."""
    state = predictor.init_state(vol)
    for oid in organs:
        predictor.add_text_prompt(state, oid)
    for _ in predictor.propagate(state):
        pass
    return state


def _merged(masks: dict[str, np.ndarray], organs: list[str]) -> dict[str, np.ndarray]:
    labels, table = merge_labels(masks, organs)
    return _label_masks(labels, table)


def table_info(path: str | None) -> str:
    """One line on the organ prompt table used: its file and the cases it was trained on."""
    t = load_prompt_table(path)
    return f"`{t.path.name if path is None else t.path}` (trained with: `{t.metadata.get('command') or 'unknown'}`)"


def run_case(
    case: str, data: Path, core: Any, organs: list[str], args: argparse.Namespace, notes: list[str]
) -> tuple[dict[str, dict[str, np.ndarray]], np.ndarray, Volume, dict[str, float]]:
    """All rows' predicted masks of one case, its reference labels, volume and stage timings.

    The rows without IoU rejection / without post-processing come from one propagation with
    ``iou_threshold=0``: slices are decoded independently, so the default threshold's raw masks are those
    masks minus the slices whose predicted IoU is below it. That derivation is checked against the
    ``segment`` output (row c) and a mismatch is reported.
    """
    times: dict[str, float] = {}
    table = load_prompt_table(args.organ_prompts)
    t = time.perf_counter()
    vol = load_volume(data / case / "image.nii.gz")
    ref = load_labels(data / case / "label.nii.gz", vol)
    amos = labelmap_info(REF_LABELMAP)
    ref_masks = {o: np.isin(ref, amos.values_for(o)) for o in organs}
    times["load"] = time.perf_counter() - t

    t = time.perf_counter()
    atlas = AtlasPrior(default_atlas(), fast=args.fast).fit(vol)
    times["atlas registration"] = time.perf_counter() - t
    preds: dict[str, dict[str, np.ndarray]] = {"atlas": {o: atlas.mask(o) for o in organs}}
    cache: dict[int, dict[int, Any]] = {}

    def predictor(
        prior: Any,
        iou_threshold: float | None = None,
        track_refine: bool = True,
        prompts: bool = False,
        joint_assignment: bool | None = None,
        anchor_refit: bool | None = None,
        trim_ends: bool | None = None,
        box_search: bool | None = None,
        expand_boxes: bool | None = None,
        shared_structures: bool = True,
        anatomical_order: bool = True,
    ) -> CachedPredictor:
        kw = {} if iou_threshold is None else {"iou_threshold": iou_threshold}
        assign = track_refine if joint_assignment is None else joint_assignment  # (d) rows: the plain prior pass
        refit = track_refine if anchor_refit is None else anchor_refit
        trim = track_refine if trim_ends is None else trim_ends
        return CachedPredictor(
            core,
            prior=FixedPrior(prior),
            device=args.device,
            progress=False,
            cache=cache,
            track_refine=track_refine,
            joint_assignment=assign,
            anchor_refit=refit,
            trim_ends=trim,
            box_search=box_search,
            expand_boxes=track_refine if expand_boxes is None else expand_boxes,
            shared_structures=shared_structures,
            anatomical_order=anatomical_order,
            precision=args.precision,
            decoder_precision=args.decoder_precision,
            runtime=args.runtime,
            organ_prompts=table if prompts else False,
            **kw,
        )

    t = time.perf_counter()
    shipped = predictor(atlas)
    res = segment(vol, organs, quiet=True, predictor=shipped)
    preds["organsam"] = _label_masks(res.labels, res.label_table)
    times["organsam (incl. slice encoding)"] = time.perf_counter() - t
    variants = {  # row -> (timing label, predictor, options): the shipped pipeline with one part changed
        "no_joint_assignment": ("without joint assignment", lambda: predictor(atlas, joint_assignment=False), None),
        "no_anchor_refit": ("without anchor re-placement", lambda: predictor(atlas, anchor_refit=False), None),
        "no_verification": ("without verification", lambda: shipped, SegmentOptions(verify=False)),
        "no_trim_ends": ("without organ-end trimming", lambda: predictor(atlas, trim_ends=False), None),
        "box_search": ("with box search", lambda: predictor(atlas, box_search=True), None),
        "no_expand_boxes": ("without box expansion", lambda: predictor(atlas, expand_boxes=False), None),
        "no_shared_structures": (
            "without shared-structure assignment",
            lambda: predictor(atlas, shared_structures=False),
            None,
        ),
        "no_anatomical_order": (
            "without anatomical order",
            lambda: predictor(atlas, anatomical_order=False),
            None,
        ),
        "organ_prompts": ("with organ prompts", lambda: predictor(atlas, prompts=True), None),
    }
    for row, (label, make, options) in variants.items():
        if row in args.rows:
            t = time.perf_counter()
            res = segment(vol, organs, quiet=True, predictor=make(), options=options)
            preds[row] = _label_masks(res.labels, res.label_table)
            times[label] = time.perf_counter() - t
    for mode in ("prior", "text"):
        if f"checkpoint_{mode}" in args.rows:
            t = time.perf_counter()
            design_predictor = build_predictor(
                checkpoint=args.checkpoint,
                device=args.device,
                progress=False,
                design_prompts=mode,
                prior=FixedPrior(atlas),
            )  # same registration
            res = segment(vol, organs, quiet=True, predictor=design_predictor)
            preds[f"checkpoint_{mode}"] = _label_masks(res.labels, res.label_table)
            times[f"checkpoint, {mode}"] = time.perf_counter() - t
    if set(args.rows) <= {
        "organsam",
        "atlas",
        "no_joint_assignment",
        "no_anchor_refit",
        "no_verification",
        "no_trim_ends",
        "box_search",
        "no_expand_boxes",
        "no_shared_structures",
        "no_anatomical_order",
        "organ_prompts",
        "checkpoint_prior",
        "checkpoint_text",
    }:
        return preds, ref, vol, times

    t = time.perf_counter()
    res = segment(vol, organs, quiet=True, predictor=predictor(atlas, track_refine=False))
    preds["no_track_refine"] = _label_masks(res.labels, res.label_table)
    state = _propagate(predictor(atlas, iou_threshold=0.0, track_refine=False), vol, organs)
    hu = vol.array if is_ct_in_hu(vol) else None
    raw0 = {o: state.results[o].mask for o in organs}
    kept = {}
    for o in organs:
        m = raw0[o].copy()
        low = [z for z, iou in state.results[o].slice_scores.items() if iou < shipped.iou_threshold]
        m[low] = False
        kept[o] = m
    preds["no_postprocess"] = _merged(kept, organs)
    preds["no_iou_rejection"] = _merged({o: postprocess_mask(o, raw0[o], hu) for o in organs}, organs)
    check = _merged({o: postprocess_mask(o, kept[o], hu) for o in organs}, organs)
    if any(not np.array_equal(check[o], preds["no_track_refine"].get(o, np.zeros_like(check[o]))) for o in organs):
        notes.append(f"WARNING {case}: the derived rows (d) do not reproduce segment()'s output exactly")
    for name, margin in (("oracle_tight", 0), ("oracle_10px", 10)):
        st = _propagate(predictor(OracleBoxes(ref_masks, margin), iou_threshold=0.0, track_refine=False), vol, organs)
        preds[name] = _merged({o: st.results[o].mask for o in organs}, organs)
    times["other rows (decoder only)"] = time.perf_counter() - t
    return preds, ref, vol, times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("ORGANSAM_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--cases", nargs="+", default=["amos_0013_slab", "amos_0001_slab"])
    ap.add_argument("--protocol", default="synapse8", help="organ set (default synapse8)")
    ap.add_argument("--fast", action="store_true", help="fast atlas registration (no Demons stage)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="encoder precision of model rows")
    ap.add_argument(
        "--decoder-precision",
        default=None,
        choices=["fp32", "bf16"],
        help="decoder precision of model rows (default: --precision)",
    )
    ap.add_argument(
        "--runtime", default="auto", choices=RUNTIMES, help="what runs the model rows' core (default: the pipeline's)"
    )
    ap.add_argument(
        "--rows",
        nargs="+",
        default=list(ROWS),
        choices=list(ROWS),
        help="rows to compute (default all; 'organsam atlas' skips the other decoder runs)",
    )
    ap.add_argument(
        "--organ-prompts",
        default=None,
        metavar="PATH",
        help="organ prompt table of the organ_prompts row (default: the packaged one)",
    )
    ap.add_argument(
        "--checkpoint",
        default=None,
        metavar="PATH",
        help="a design checkpoint of `organsam train` for the rows (e) (give --rows checkpoint_prior "
        "checkpoint_text ...)",
    )
    ap.add_argument("--json", default=None, help="also write all per-case rows and summaries to this file")
    ap.add_argument("--png", default=None, help="also write a per-organ Dice bar chart of all rows (PNG)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    ckpt_rows = [r for r in args.rows if r.startswith("checkpoint_")]
    if args.checkpoint is None and ckpt_rows and args.rows != list(ROWS):
        ap.error(f"rows {ckpt_rows} need --checkpoint PATH")
    if args.checkpoint is None:  # the default row list holds them; without a checkpoint they are left out
        args.rows = [r for r in args.rows if not r.startswith("checkpoint_")]
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    command = " ".join(["python bench/quality.py", *(argv if argv is not None else sys.argv[1:])])
    t0 = time.perf_counter()
    data = Path(args.data)
    proto = get_protocol(args.protocol)
    organs = list(proto.organs)
    core = build_lite_medsam()
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in ROWS if k in args.rows}
    timings: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    for case in args.cases:
        preds, ref, vol, times = run_case(case, data, core, organs, args, notes)
        timings[case] = {k: round(v, 1) for k, v in times.items()}
        for key, masks in preds.items():
            if key not in rows:
                continue
            rows[key] += score_case(masks, ref, vol.spacing, proto, ref_labelmap=REF_LABELMAP, case=case, rule=RULE)
        logger.info("%s done: %s", case, timings[case])
    labels = dict(ROWS)
    if args.organ_prompts:  # not the packaged table: say which one the row used
        table_name = Path(args.organ_prompts).name
        labels["organ_prompts"] = f"(c) + learned organ prompt tokens (table {table_name}, see header)"
    results = [EvaluationResult(proto, labels[k], rows[k], RULE, "mm", REF_LABELMAP) for k in rows]
    total = time.perf_counter() - t0

    names = proto.organ_names()
    table = []
    for r in results:
        s = r.summary()
        table.append(
            [r.method]
            + [format_value(s["dice"]["organs"][o]["mean"], "dice") for o in organs]
            + [
                f"**{format_value(s['dice']['mean'], 'dice')}**",
                format_value(s["hd95"]["mean"], "hd95"),
                format_value(s["nsd"]["mean"], "nsd"),
            ]
        )
    out = [
        f"## organsam validation ({proto.name} organs, AMOS reference labels)",
        "",
        f"Command: `{command}`  ",
        f"Cases: {', '.join(args.cases)} (manual AMOS22 reference labels). Organ prompt table: "
        f"{table_info(args.organ_prompts)}. "
        f"Atlas registration: {'fast' if args.fast else 'full'}. Device: {args.device}, encoder {args.precision}, "
        f"decoder {args.decoder_precision or args.precision}, runtime {args.runtime}. "
        f"Total {total:.0f} s.  ",
        f"Values: mean over cases. Dice and NSD in %, HD95 in mm (MONAI, on the CT grid with its spacing); "
        f"empty-mask rule `{RULE}`; NSD tolerances per organ (see `organsam evaluate --describe`). "
        f"Model rows are scored as merged label maps.",
        "",
        markdown_table(["method", *[names[o] for o in organs], "mean Dice", "mean HD95 (mm)", "mean NSD (%)"], table),
        "",
        "### Dice (%) per case",
        "",
    ]
    per_case = []
    for r in results:
        s = r.summary()["dice"]["cases"]
        per_case.append([r.method] + [format_value(s[c], "dice") for c in args.cases])
    out += [markdown_table(["method", *args.cases], per_case), ""]
    for m in ("hd95", "nsd"):
        out += [f"### {m.upper()} per organ", "", comparison_markdown(results, m), ""]
    out.append(
        "Timings (s): " + "; ".join(f"{c}: " + ", ".join(f"{k} {v}" for k, v in t.items()) for c, t in timings.items())
    )
    out += notes
    print("\n".join(out))
    if args.png:
        bar_chart(
            results,
            "dice",
            args.png,
            title=f"Dice (%) per organ, {', '.join(args.cases)}",
            labels=[r.method.split(")")[0] + ") " + k for r, k in zip(results, rows)],
        )
    if args.json:
        doc = {
            "command": command,
            "notes": notes,
            "protocol": proto.name,
            "cases": args.cases,
            "empty_rule": RULE,
            "fast": args.fast,
            "device": args.device,
            "seconds": round(total, 1),
            "timings": timings,
            "precision": args.precision,
            "decoder_precision": args.decoder_precision or args.precision,
            "runtime": args.runtime,
            "rows": {k: {"label": labels[k], "summary": r.summary(), "scores": r.rows} for k, r in zip(rows, results)},
        }
        Path(args.json).write_text(json.dumps(jsonable(doc), indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
