"""Train the registered designs with the same budget and compare their validation Dice per organ.

What it measures: each design (``crisp_sam2``, ``seg_sam``, ``pg_sam``, ``unified``; presets in
``organsam/configs``) is trained by :func:`organsam.training.trainer.train` from ``train_default.yaml`` with the
same steps, batch size, seed, learning-rate schedule and prompted organs, on the shared-data training split
(``ts_a``, ``ts_b``, ``amos_0001``: three patients) from cached frozen-encoder features
(``data.feature_cache=true``: the LiteMedSAM encoder stays as released, augmentation is off). Prompts are text
only, in training and validation (no boxes). Each design is then scored by the trainer's validation
(:func:`organsam.training.validation.validate`) on ``amos_0013`` (manual AMOS labels, never trained on): Dice per
organ over all its labelled slices on the 256x256 model grid, masks gated by the presence logit. With three
training patients this is a tiny-data comparison of the designs, not a benchmark.

``--checkpoints pg_sam seg_sam crisp_sam2`` trains nothing: it scores the trained checkpoints (the shipped ones, or
``DESIGN=PATH``) with box + text and with text alone, beside LiteMedSAM with the box alone and the shipped
pipeline: the README's table of the designs.

``--prompts box`` compares them where the shipped pipeline uses them: every training sample also gets its organ's
box, shifted and resized like a registered atlas's box, and validation prompts each organ with its reference box
grown by 5 px (no presence gate); ``organ_prompts`` (learned tokens added to the box prompt) joins the four. This
measures what each design's modules add to a box-prompted LiteMedSAM, which a CPU budget can train.

Output: one Markdown table on stdout (rows: organs, mean, trainable parameters, wall seconds, seconds per step;
columns: designs); logs go to stderr. Runs live in ``<out>/<design>`` (the trainer's checkpoints, ``metrics.csv``
and ``compare.json`` with the result); a rerun with the same budget reuses finished designs and resumes
unfinished ones. The feature cache ``<out>/feature_cache`` is shared (its hash separates the encoder levels each
design stores). Data: ``$ORGANSAM_DATA`` or ``../shared/data``.

    nice -n 15 .venv/bin/python bench/compare_designs.py --json runs/compare_designs/results.json \\
        > bench/results/compare_designs.md

(defaults: ``--steps 20 --batch-size 4``; measured on the 2-core CPU, shared with other work, from an empty
``--out``: 1235 s in all = 419 s to cache the 143 training slices + 330 s crisp_sam2, 142 s seg_sam, 135 s pg_sam,
203 s organsam, of which 1-3 min is each design's validation; median step 9.2 / 4.3 / 2.2 / 6.7 s. That is far
too few steps to rank the designs: on a GPU use e.g. ``--device cuda --steps 2000 --batch-size 8``.)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from organsam.model.base import DesignOutput, resolve_organ_ids  # noqa: E402
from organsam.model.sam_core import build_lite_medsam  # noqa: E402
from organsam.preprocessing.slices import to_model_input  # noqa: E402
from organsam.registry import build_design, list_designs  # noqa: E402
from organsam.training.case_store import CaseStore  # noqa: E402
from organsam.training.datasets import default_shared_root, read_dataset  # noqa: E402
from organsam.training.feature_cache import FeatureCache  # noqa: E402
from organsam.training.train_config import TrainConfig, load_train_config  # noqa: E402
from organsam.training.trainer import train  # noqa: E402
from organsam.training.validation import validate  # noqa: E402

logger = logging.getLogger("bench.compare_designs")

SYNAPSE8 = ("liver", "spleen", "kidney_right", "kidney_left", "gallbladder", "stomach", "aorta", "pancreas")
TRAIN_CASES = ("ts_a", "ts_b", "amos_0001")
VAL_CASE = "amos_0013"
#: ``--prompts box``: every training sample also gets its organ's box, shifted and resized like a registered atlas's
#: box (as the shipped ``organ_prompts`` checkpoint is trained, ``train_organ_prompts.yaml``); validation boxes are
#: the reference boxes grown by the same margin (model pixels).
BOX_PROMPTS: dict[str, Any] = {"box_prompt_prob": 1.0, "box_jitter": 0.0, "box_jitter_rel": 0.15, "box_margin": 5.0}
#: Designs compared by default: the four text-only designs; with boxes also ``organ_prompts`` (box tokens only).
TEXT_DESIGNS = ("crisp_sam2", "seg_sam", "pg_sam", "unified")
#: Column name of the untrained reference of ``--prompts box``.
BOX_ONLY = "LiteMedSAM, box only"
#: Model settings common to all designs (the rest comes from each design's preset).
MODEL = {"freeze_image_encoder": True, "freeze_prompt_encoder": True, "freeze_mask_decoder": False}


def make_config(design: str, args: argparse.Namespace) -> TrainConfig:
    """The training configuration of one design: ``train_default.yaml`` with the comparison's budget."""
    cases = [*TRAIN_CASES, VAL_CASE]
    overrides: dict[str, Any] = {
        "design": design,
        "data": {
            "root": str(args.data) if args.data else None,
            "options": {"cases": cases},
            "organs": list(args.organs),
            **(BOX_PROMPTS if args.prompts == "box" else {"box_prompt_prob": 0.0}),
            "num_workers": 0,
            "feature_cache": True,
            "feature_cache_dir": str(args.out / "feature_cache"),
        },
        "optim": {"lr": args.lr, "warmup_steps": max(1, args.steps // 10)},
        "val": {
            "every": 0,
            "organs": list(args.organs),
            "max_slices": args.val_slices,
            **({"box_margin": BOX_PROMPTS["box_margin"], "presence_gate": False} if args.prompts == "box" else {}),
        },
        "steps": args.steps,
        "batch_size": args.batch_size,
        "device": args.device,
        "out_dir": str(args.out / design),
        "ckpt_every": max(1, args.steps // 4),
        "keep_checkpoints": 1,
        "tensorboard": False,
        "progress": False,
    }
    cfg = load_train_config("train_default", [overrides])
    cfg.model = dict(MODEL)  # train_default's model keys are organsam's; the presets give the rest
    return cfg


def budget_of(cfg: TrainConfig) -> dict[str, Any]:
    """What must match for a recorded result to be reused."""
    return {
        "steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "lr": cfg.optim.lr,
        "organs": list(cfg.data.organs),
        "val_slices": cfg.val.max_slices,
        "seed": cfg.seed,
        "box_prompt_prob": cfg.data.box_prompt_prob,
    }


def read_record(cfg: TrainConfig) -> dict[str, Any]:
    """``<out>/<design>/compare.json``: the budget of the run in that folder and its result (once finished)."""
    path = Path(cfg.out_dir) / "compare.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def is_finished(design: str, args: argparse.Namespace) -> bool:
    """Whether the design's folder holds a result of this budget."""
    cfg = make_config(design, args)
    record = read_record(cfg)
    return record.get("budget") == budget_of(cfg) and bool(record.get("result"))


@torch.no_grad()
def fill_feature_caches(designs: list[str], args: argparse.Namespace) -> None:
    """Encode every training slice once (all encoder levels) and store it in the feature cache of each design.

    The trainer fills its cache lazily, encoding each slice again for every design whose cache hash differs
    (pg_sam and crisp_sam2 store extra encoder levels); one pass here saves those repeats.
    """
    caches: dict[str, FeatureCache] = {}
    for design in designs:
        cfg = make_config(design, args)
        torch.manual_seed(cfg.seed)  # as the trainer does before building
        model = build_design(design, [cfg.model])
        # the trainer's tag (organsam.training.trainer), so that it finds these files
        cache = FeatureCache(
            cfg.data.feature_cache_dir, model, cfg.data.feature_cache_dtype, tag=f"{cfg.data.window}|to_model_input"
        )
        caches.setdefault(cache.hash, cache)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else "cpu"
        if args.device == "auto"
        else args.device
    )
    core = model.core.to(device).eval()
    store = CaseStore(
        read_dataset("shared", cfg.data.root, cases=list(TRAIN_CASES)), model.organ_ids, window=cfg.data.window
    )
    todo = [
        (ci, z)
        for ci, case in enumerate(store.cases)
        for z in range(store.areas[ci].shape[0])
        if any(not c.path(case.case_id, z).is_file() for c in caches.values())
    ]
    logger.info("feature caches %s: encoding %d slice(s)", [c.root.name for c in caches.values()], len(todo))
    for s in range(0, len(todo), 4):
        chunk = todo[s : s + 4]
        images = torch.stack([torch.from_numpy(to_model_input(store.image_slice(ci, z))[0]) for ci, z in chunk])
        enc = core.encode(images.to(device), keep_levels=True)
        for i, (ci, z) in enumerate(chunk):
            for cache in caches.values():
                cache.put(store.cases[ci].case_id, z, enc, i)  # stores the levels it needs


def run_design(design: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train and validate one design (resuming an unfinished run of the same budget), or reuse its result."""
    cfg = make_config(design, args)
    budget = budget_of(cfg)
    record = read_record(cfg)
    if record.get("budget") == budget and record.get("result"):
        logger.info("%s: reusing the finished run in %s", design, cfg.out_dir)
        return record["result"]
    if record.get("budget") != budget:  # a run of another budget (or of unknown budget) is not resumed
        cfg.resume = None
    path = Path(cfg.out_dir) / "compare.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"budget": budget, "result": None}))
    t0 = time.perf_counter()
    result = train(cfg, quiet=True)
    if result.val is None:  # it had finished before its result was recorded: train again
        cfg.resume = None
        t0 = time.perf_counter()
        result = train(cfg, quiet=True)
    wall = time.perf_counter() - t0
    assert result.val is not None
    losses = [h["loss"] for h in result.history]
    step_s = [cfg.batch_size / h["samples_per_s"] for h in result.history]
    counts = build_design(design, [cfg.model]).parameter_counts()
    out = {
        "dice": result.val.per_organ,
        "mean_dice": result.val.mean_dice,
        "trainable_params": counts["trainable"],
        "total_params": counts["total"],
        "wall_s": wall,
        "median_step_s": statistics.median(step_s),
        "steps_this_run": len(result.history),
        "final_loss": losses[-1],
        "nonfinite_losses": sum(not math.isfinite(v) for v in losses),
    }
    path.write_text(json.dumps({"budget": budget, "result": out}, indent=2))
    logger.info("%s: mean Dice %.4f, %.0f s", design, out["mean_dice"], wall)
    return out


class BoxOnlyLiteMedSam(torch.nn.Module):
    """The reference column of ``--prompts box``: LiteMedSAM as released, given each organ's box and no text, in
    the interface the trainer's validation calls (``encode_plain``, ``forward``)."""

    def __init__(self, core: torch.nn.Module) -> None:
        super().__init__()
        self.core = core

    def encode_plain(self, images: torch.Tensor) -> Any:
        """(B, 3, 256, 256) -> the core's encoder output."""
        return self.core.encode(images, keep_levels=False)

    def forward(self, images: None, organ_index: torch.Tensor, boxes: torch.Tensor, *, encoded: Any) -> DesignOutput:
        """(B,) organs of one slice with (B, 4) boxes -> (B, 1, 256, 256) masks; the organ index is not used."""
        B = organ_index.shape[0]
        image_index = torch.zeros(B, dtype=torch.long, device=organ_index.device)
        masks, iou = self.core.decode(encoded.embedding, boxes=boxes, image_index=image_index)
        return DesignOutput(masks=masks, iou=iou, presence_logit=torch.zeros(B, device=masks.device))


def run_box_only_baseline(args: argparse.Namespace) -> dict[str, Any]:
    """Validation of :class:`BoxOnlyLiteMedSam` on the comparison's validation case (nothing trained)."""
    cfg = make_config(TEXT_DESIGNS[0], args)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else "cpu"
        if args.device == "auto"
        else args.device
    )
    core = build_lite_medsam().to(device).eval()
    organ_ids = resolve_organ_ids(cfg.data.organs)
    store = CaseStore(read_dataset("shared", cfg.data.root, cases=[VAL_CASE]), organ_ids, window=cfg.data.window)
    t0 = time.perf_counter()
    val = validate(
        BoxOnlyLiteMedSam(core),
        store,
        [organ_ids.index(o) for o in args.organs],
        max_slices=cfg.val.max_slices,
        presence_gate=False,
        batch_size=cfg.val.batch_size,
        box_margin=cfg.val.box_margin,
    )
    return {
        "dice": val.per_organ,
        "mean_dice": val.mean_dice,
        "trainable_params": 0,
        "total_params": sum(p.numel() for p in core.parameters()),
        "wall_s": time.perf_counter() - t0,
        "median_step_s": math.nan,
        "steps_this_run": 0,
        "final_loss": math.nan,
        "nonfinite_losses": 0,
    }


def pct(v: float | None) -> str:
    """A Dice in % with one decimal (``n/a`` when missing)."""
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.1f}"


def dice_table(caption: str, results: dict[str, dict[str, Any]], organs: list[str]) -> list[str]:
    """Caption, header and one row per organ plus the mean (columns: ``results``' keys)."""
    lines = [caption, "", "| organ | " + " | ".join(results) + " |", "|---|" + "---:|" * len(results)]
    for organ in organs:
        lines.append(f"| {organ} | " + " | ".join(pct(r["dice"].get(organ)) for r in results.values()) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{pct(r['mean_dice'])}**" for r in results.values()) + " |")
    return lines


def _val_store(args: argparse.Namespace, organ_ids: list[str]) -> CaseStore:
    root = str(args.data) if args.data else None
    return CaseStore(read_dataset("shared", root, cases=[VAL_CASE]), organ_ids, window="abdomen")


def run_checkpoint(design: str, path: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Validation of a trained checkpoint on the validation case: with text alone (presence-gated) and with text +
    each organ's reference box grown by the box margin (no gate)."""
    from organsam.inference.predictor_factory import resolve_checkpoint
    from organsam.model.checkpoint import load_checkpoint

    resolved = resolve_checkpoint(design, path)
    model = load_checkpoint(resolved, design=design).eval()
    store = _val_store(args, model.organ_ids)
    organs = [model.organ_ids.index(o) for o in args.organs]
    out = {}
    for mode, gate, margin in (("text", True, None), ("box", False, BOX_PROMPTS["box_margin"])):
        t0 = time.perf_counter()
        val = validate(model, store, organs, max_slices=args.val_slices, presence_gate=gate, box_margin=margin)
        out[mode] = {"dice": val.per_organ, "mean_dice": val.mean_dice, "wall_s": time.perf_counter() - t0}
    file = Path(str(resolved)).resolve()
    shown = file.relative_to(REPO) if file.is_relative_to(REPO) else file
    out["checkpoint"] = {"path": str(shown), "mb": file.stat().st_size / 1e6}
    return out


def run_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    """The shipped pipeline (``organsam segment``: atlas boxes + LiteMedSAM) on the validation slab, Dice per organ
    of the label map it writes (3D, on the CT grid)."""
    import numpy as np

    from organsam.inference.segment import segment
    from organsam.io import load_labels, load_volume
    from organsam.vocabulary import labelmap_info

    root = Path(args.data) if args.data else default_shared_root()
    vol = load_volume(root / f"{VAL_CASE}_slab" / "image.nii.gz")
    ref = load_labels(root / f"{VAL_CASE}_slab" / "label.nii.gz", vol)
    info = labelmap_info("amos22")
    t0 = time.perf_counter()
    res = segment(vol, list(args.organs), quiet=True)
    dice = {}
    for organ in args.organs:
        value = next((v for v, o in res.label_table.items() if o == organ), None)
        pred = res.labels == value if value is not None else np.zeros(ref.shape, bool)
        own = np.isin(ref, info.values_for(organ))
        dice[organ] = float(2 * (pred & own).sum() / max(pred.sum() + own.sum(), 1))
    return {"dice": dice, "mean_dice": float(np.mean(list(dice.values()))), "wall_s": time.perf_counter() - t0}


def shipped_table(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The README's comparison of the trained checkpoints (``--checkpoints``): LiteMedSAM with the box alone, each
    design with box + text and with text alone, and the shipped pipeline."""
    boxed = argparse.Namespace(**{**vars(args), "prompts": "box"})  # the box-only column: reference boxes
    results: dict[str, dict[str, Any]] = {BOX_ONLY: run_box_only_baseline(boxed)}
    record: dict[str, Any] = {BOX_ONLY: results[BOX_ONLY]}
    for item in args.checkpoints:
        design, _, path = item.partition("=")
        got = run_checkpoint(design, path or "packaged", args)
        record[design] = got
        results[f"{design}, box + text"] = got["box"]
        results[f"{design}, text alone"] = got["text"]
    results["organsam segment (atlas + LiteMedSAM, 3D)"] = record["pipeline"] = run_pipeline(args)

    ckpts = ", ".join(
        f"{d}: {v['checkpoint']['path']} ({v['checkpoint']['mb']:.1f} MB)"
        for d, v in record.items()
        if isinstance(v, dict) and "checkpoint" in v
    )
    caption = (
        f"Trained design checkpoints on {VAL_CASE} (manual AMOS labels, never trained on). Slice columns: all "
        f"labelled slices on the 256x256 model grid; 'box + text': each organ's reference box grown by "
        f"{BOX_PROMPTS['box_margin']:g} px on the slices where it is present (no presence gate); 'text alone': every "
        f"slice, presence-gated. The last column is the shipped pipeline on the whole slab (3D Dice of the label "
        f"map it writes, CT grid). Checkpoints: {ckpts}."
    )
    lines = dice_table(caption, results, list(args.organs))
    return "\n".join(lines), record


def table(results: dict[str, dict[str, Any]], args: argparse.Namespace, cache_s: float) -> str:
    """The Markdown comparison table (Dice in %); ``cache_s``: seconds spent filling the feature caches."""
    data = args.data or default_shared_root()
    slices = f"{args.val_slices} slices" if args.val_slices else "all labelled slices"
    cache = (
        "cache filled lazily while training"
        if args.no_prefill
        else f"cache filled in {cache_s:.0f} s, not in the wall times"
        if cache_s >= 1
        else "cache already filled"
    )
    if args.prompts == "box":
        prompts = (
            f"text + box prompts (training boxes shifted/resized by up to {BOX_PROMPTS['box_jitter_rel']:.0%} "
            f"like an atlas's, grown by {BOX_PROMPTS['box_margin']:g} px; validation: reference boxes grown by "
            f"{BOX_PROMPTS['box_margin']:g} px)"
        )
        gate = "box-prompted on each slice where the organ is present"
    else:
        prompts, gate = "text prompts only", "presence-gated"
    caption = (
        f"Design comparison, tiny data: {args.steps} steps x batch {args.batch_size} per design (seed 0, AdamW lr "
        f"{args.lr:g}, {max(1, args.steps // 10)} warm-up steps, cosine), trained on 3 patients "
        f"({', '.join(TRAIN_CASES)}) from {data}; frozen LiteMedSAM image encoder (cached features, one encoder "
        f"pass for all designs, {cache}; no augmentation); {prompts}. Validation Dice (%) on {VAL_CASE} "
        f"(manual AMOS labels, never trained on; {slices}, 256x256 model grid, {gate})."
    )
    lines = dice_table(caption, results, list(args.organs))

    def row(name: str, cells: list[str]) -> None:
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    row("trainable params", [f"{r['trainable_params'] / 1e6:.2f} M" for r in results.values()])
    row("wall s (train + val)", [f"{r['wall_s']:.0f}" for r in results.values()])
    row(
        "s / step (median)",
        ["-" if math.isnan(r["median_step_s"]) else f"{r['median_step_s']:.2f}" for r in results.values()],
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per design (default 20)")
    p.add_argument("--batch-size", type=int, default=4, help="slices per step (default 4)")
    designs = list_designs()
    p.add_argument(
        "--designs",
        nargs="+",
        choices=designs,
        default=None,
        help="default: the four text designs; with --prompts box also organ_prompts",
    )
    p.add_argument(
        "--prompts",
        choices=["text", "box"],
        default="text",
        help="text: text prompts only (default); box: text + atlas-like jittered boxes, validated with "
        "reference boxes (what each design adds to LiteMedSAM where the pipeline gives it a box)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="run folders (default runs/compare_designs, runs/compare_designs_box with --prompts box)",
    )
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4, as train_default)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--organs", nargs="+", default=list(SYNAPSE8), help="organs trained and scored (Synapse-8)")
    p.add_argument("--val-slices", type=int, default=0, help="validation slices of amos_0013 (0: all)")
    p.add_argument("--data", type=Path, default=None, help="shared data folder ($ORGANSAM_DATA, ../shared/data)")
    p.add_argument(
        "--no-prefill",
        action="store_true",
        help="let the trainer fill the feature caches lazily (quicker for a handful of steps)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    p.add_argument(
        "--checkpoints",
        nargs="+",
        default=None,
        metavar="DESIGN[=PATH]",
        help="evaluate trained checkpoints instead of training (PATH default: the shipped one, 'packaged'), beside "
        "LiteMedSAM with the box alone and the shipped pipeline",
    )
    args = p.parse_args(argv)
    if args.designs is None:
        args.designs = [*TEXT_DESIGNS, "organ_prompts"] if args.prompts == "box" else list(TEXT_DESIGNS)
    elif args.prompts == "text" and "organ_prompts" in args.designs:
        p.error("organ_prompts only adds tokens to box prompts: compare it with --prompts box")
    if args.out is None:
        args.out = REPO / "runs" / ("compare_designs_box" if args.prompts == "box" else "compare_designs")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    if args.checkpoints:
        text, record = shipped_table(args)
        print(text)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(record, indent=2, default=str))
        return 0
    todo = [d for d in args.designs if not is_finished(d, args)]
    t0 = time.perf_counter()
    if todo and not args.no_prefill:
        fill_feature_caches(todo, args)
    cache_s = time.perf_counter() - t0
    results = {d: run_design(d, args) for d in args.designs}
    if args.prompts == "box":  # what the boxes alone give: the column every design is measured against
        results = {BOX_ONLY: run_box_only_baseline(args), **results}
    print(table(results, args, cache_s))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"args": meta, "cache_fill_s": cache_s, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
