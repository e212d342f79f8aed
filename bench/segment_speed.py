"""Whole-volume wall time and peak memory of ``organsam.segment`` next to the bare encoder pass.

For each case (see ``bench/_common.py``: ``amos_0013_slab``, ``ts_a``, ``stack100`` = 512x512x100 from AMOS
0013's real slices interpolated along z, ``ts_a_512`` = TS-A resampled to 512x512x100), in a fresh
subprocess (so that the peak RSS is the case's own):

1. build the LiteMedSAM core (reported apart: ``build s``);
2. run ``segment(volume, <13 AMOS abdominal organs>)`` end to end with a fresh ``VolumePredictor``
   (location prior, encoding of the slices a prompted organ's prior box touches, decoding, post-processing)
   and read the peak RSS right after it;
3. in the same process, time the bare LiteMedSAM encoder (``SamCore.encode``, float32, as in the original
   code) over EVERY slice of the same volume, same batch size and threads, input preparation included.

The ratio is pipeline seconds / bare-encoder seconds (wall clock); ``cpu r.`` is the same ratio in CPU
seconds of this process (all threads), steadier when other jobs share the machine; ``ours-all s`` is the
pipeline's own encoder (``VolumePredictor.encode_images``) over every slice, i.e. the runtime speed-up
without skipping slices. Stage columns: ``prior`` (atlas registration),
``enc`` (encoding inside the pipeline), ``dec`` (decoding + mask paste), ``post`` (post-processing);
``prompts``: the prompts (box, points) decoded.
On CUDA every timer synchronises first; peak GPU memory is reported too.

``--design NAME`` runs a research design instead of the LiteMedSAM pipeline in step 2, as ``segment --design
NAME`` does (pg_sam and seg_sam: text alone on every slice; crisp_sam2: text + the atlas boxes, its slice memory
on), with ``--checkpoint packaged`` (the shipped weights), a checkpoint path, or ``untrained`` (the design as
built from its preset: the same compute and memory, for a design that does not ship yet).

    .venv/bin/python bench/segment_speed.py [--device cpu|cuda] [--cases amos_0013_slab ts_a stack100]
        [--precision fp32|bf16] [--batch-size 4] [--threads N] [--fast-prior] [--json out.json]
        [--design pg_sam --checkpoint packaged] [--no-bare]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
import warnings

import torch
from _common import AMOS13, CASES, load_case, peak_rss_mb, sync

from organsam.inference.predictor_factory import DEFAULT_DESIGN
from organsam.inference.runtimes import RUNTIMES
from organsam.preprocessing.intensity import window_ct
from organsam.preprocessing.slices import to_model_input_batch

DEFAULT_CASES = ["amos_0013_slab", "ts_a", "stack100"]


def run_case(case: str, args: argparse.Namespace) -> dict:
    """Run one case in this process and return its measurements."""
    from organsam.inference.segment import segment
    from organsam.inference.volume_predictor import VolumePredictor
    from organsam.model.sam_core import build_lite_medsam
    from organsam.priors import AtlasPrior, default_atlas

    device = torch.device(args.device)
    out: dict = {
        "case": case,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "precision": args.precision,
        "batch_size": args.batch_size,
    }
    vol, note = load_case(case)
    out.update(note=note, shape=list(vol.array.shape), spacing=[round(float(s), 3) for s in vol.spacing])
    rss_data = peak_rss_mb()

    t0 = time.perf_counter()
    core = build_lite_medsam().to(device).eval()
    prior = AtlasPrior(default_atlas(), fast=args.fast_prior)

    if args.design == DEFAULT_DESIGN:
        predictor = VolumePredictor(
            core,
            prior=prior,
            device=device,
            batch_size=args.batch_size,
            precision=args.precision,
            fast_encoder=not args.reference_encoder,
            progress=False,
            runtime=args.runtime,
        )
    else:
        predictor = design_under_test(args, prior, device)
    out["design"] = args.design
    if getattr(predictor.decoder, "runtime", "torch") == "openvino":
        predictor.decoder.openvino()  # load the compiled graphs (converted once per machine into the cache)
    out["runtime"] = getattr(predictor.decoder, "runtime", "torch")
    sync(device)
    out["build_s"] = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    result = segment(vol, AMOS13, predictor=predictor, quiet=True, device=str(device))
    sync(device)
    out["pipeline_s"] = time.perf_counter() - t0
    out["pipeline_cpu_s"] = time.process_time() - cpu0
    out["peak_rss_mb"] = peak_rss_mb()
    out["rss_before_mb"] = rss_data
    if device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    t = result.report["timings_s"]
    out["stages"] = {
        "prior": result.timings["prior"],
        "encode": predictor.encode_seconds,
        "decode": result.timings["encode"] + result.timings["model"] - predictor.encode_seconds,
        "post": result.timings["postprocess"],
        "total": result.timings["total"],
    }
    out["encoded_slices"] = result.report["encoded_slices"]
    out["decoded_prompts"] = result.report["decoded_prompts"]
    out["slices"] = int(vol.array.shape[0])
    out["organs_requested"] = len(AMOS13)
    out["organs_found"] = sum(1 for o in result.report["organs"].values() if o["present"])
    del result, t

    windowed = window_ct(vol.array, "abdomen")

    def prep_encode_ref(idx: slice) -> None:
        x = torch.from_numpy(to_model_input_batch(windowed[idx])[0]).to(device)
        core.encode(x, keep_levels=False)

    def bare(encode_batch) -> tuple[float, float]:  # noqa: ANN001
        n = windowed.shape[0]
        encode_batch(slice(0, min(args.batch_size, n)))  # warm-up (shape-specific kernels)
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            for i in range(0, n, args.batch_size):
                encode_batch(slice(i, i + args.batch_size))
        sync(device)
        return time.perf_counter() - t0, time.process_time() - c0

    if args.no_bare:
        return out
    with torch.inference_mode():
        out["bare_encoder_s"], out["bare_encoder_cpu_s"] = bare(prep_encode_ref)
        if (
            not args.no_ours_all
            and args.design == DEFAULT_DESIGN
            and (not args.reference_encoder or args.precision != "fp32")
        ):
            out["pipeline_encoder_all_s"], out["pipeline_encoder_all_cpu_s"] = bare(
                lambda idx: predictor.decoder.encode_images(
                    torch.from_numpy(to_model_input_batch(windowed[idx])[0]).to(device)
                )
            )
    out["peak_rss_with_bare_mb"] = peak_rss_mb()
    out["ratio"] = out["pipeline_s"] / out["bare_encoder_s"]
    out["cpu_ratio"] = out["pipeline_cpu_s"] / out["bare_encoder_cpu_s"]
    return out


def design_under_test(args: argparse.Namespace, prior: object, device: torch.device) -> object:
    """The predictor of ``segment --design NAME`` for ``--design``/``--checkpoint`` (``untrained``: the design
    built from its preset)."""
    from organsam.inference.design_predictor import design_predictor
    from organsam.inference.predictor_factory import default_design_prompts, resolve_checkpoint
    from organsam.model.checkpoint import load_checkpoint
    from organsam.registry import build_design

    if args.checkpoint == "untrained":
        model = build_design(args.design)
    else:
        model = load_checkpoint(resolve_checkpoint(args.design, args.checkpoint), design=args.design)
    prompts = default_design_prompts(model)
    return design_predictor(
        model, prompts=prompts, prior=prior, device=device, batch_size=args.batch_size, progress=False
    )


def child_command(case: str, args: argparse.Namespace) -> list[str]:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        case,
        "--device",
        args.device,
        "--precision",
        args.precision,
        "--batch-size",
        str(args.batch_size),
        "--runtime",
        args.runtime,
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.fast_prior:
        cmd.append("--fast-prior")
    if args.reference_encoder:
        cmd.append("--reference-encoder")
    if args.no_ours_all:
        cmd.append("--no-ours-all")
    if args.no_bare:
        cmd.append("--no-bare")
    return cmd + ["--design", args.design, "--checkpoint", args.checkpoint]


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'case':15s} {'slices':>6s} {'enc.sl':>6s} {'organs':>6s} {'pipeline s':>10s} "
        f"{'enc-all s':>9s} {'ratio':>6s} {'cpu r.':>6s} {'RSS MB':>7s} | {'build':>5s} {'prior':>6s} {'enc':>6s} "
        f"{'dec':>6s} {'post':>5s} {'prompts':>7s} {'ours-all s':>10s}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['case']:15s} failed: {r['error']}")
            continue
        s = r["stages"]
        ours = r.get("pipeline_encoder_all_s")
        gpu = f" GPU {r['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in r else ""
        ours_s = f"{ours:10.1f}" if ours is not None else f"{'-':>10s}"
        organs = f"{r['organs_found']}/{r['organs_requested']}"
        bare = (
            f"{r['bare_encoder_s']:9.1f} {r['ratio']:6.2f} {r['cpu_ratio']:6.2f}"
            if "bare_encoder_s" in r
            else f"{'-':>9s} {'-':>6s} {'-':>6s}"
        )
        design = f" ({r['design']})" if r.get("design", DEFAULT_DESIGN) != DEFAULT_DESIGN else ""
        print(
            f"{r['case']:15s} {r['slices']:6d} {r['encoded_slices']:6d} {organs:>6s} "
            f"{r['pipeline_s']:10.1f} {bare} "
            f"{r['peak_rss_mb']:7.0f} | "
            f"{r['build_s']:5.1f} {s['prior']:6.1f} {s['encode']:6.1f} {s['decode']:6.1f} {s['post']:5.1f} "
            f"{r.get('decoded_prompts', -1):7d} {ours_s}{gpu}{design}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cases", nargs="+", default=DEFAULT_CASES, choices=CASES)
    ap.add_argument(
        "--precision",
        default=None,
        choices=["fp32", "bf16"],
        help="encoder precision (default: the predictor's: fp32 on CPU, bf16 on CUDA)",
    )
    ap.add_argument("--batch-size", type=int, default=None, help="slices per encoder pass (default: the predictor's)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--fast-prior", action="store_true", help="coarser, faster atlas registration")
    ap.add_argument("--reference-encoder", action="store_true", help="pipeline uses core.encode as is")
    ap.add_argument(
        "--runtime", default="auto", choices=RUNTIMES, help="what runs the pipeline's core (default: the predictor's)"
    )
    ap.add_argument(
        "--no-ours-all",
        action="store_true",
        help="skip timing the pipeline's own encoder over every slice (the 'ours-all s' column)",
    )
    ap.add_argument("--design", default=DEFAULT_DESIGN, help="a research design instead of the default pipeline")
    ap.add_argument("--checkpoint", default="packaged", help="with --design: packaged, a path, or untrained")
    ap.add_argument("--no-bare", action="store_true", help="skip the bare encoder pass (no ratio)")
    ap.add_argument("--json", default=None, help="write all measurements to this JSON file")
    ap.add_argument("--in-process", action="store_true", help="run cases in this process (peak RSS cumulative)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.precision is None:
        args.precision = "bf16" if args.device.startswith("cuda") else "fp32"
    if args.batch_size is None:
        from organsam.inference.volume_predictor import VolumePredictor

        args.batch_size = VolumePredictor.default_batch_size(args.device)
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.child:
        print("RESULT " + json.dumps(run_case(args.child, args)), flush=True)
        return 0

    print(
        f"device {args.device}, threads {args.threads or torch.get_num_threads()}, precision {args.precision}, "
        f"batch {args.batch_size}, prior {'fast' if args.fast_prior else 'full'}, runtime {args.runtime}",
        flush=True,
    )
    rows: list[dict] = []
    for case in args.cases:
        if args.in_process:
            rows.append(run_case(case, args))
        else:
            proc = subprocess.run(child_command(case, args), capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                rows.append({"case": case, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1]})
            else:
                rows.append(json.loads(lines[-1][len("RESULT ") :]))
        r = rows[-1]
        print(
            f"  {case}: "
            + (
                f"pipeline {r['pipeline_s']:.1f} s, bare encoder {r.get('bare_encoder_s', float('nan')):.1f} s"
                if "error" not in r
                else r["error"]
            ),
            flush=True,
        )
    print()
    print_table(rows)
    for r in rows:
        if "note" in r:
            print(f"  {r['case']}: {r['note']}, shape (Z, Y, X) {tuple(r['shape'])}, spacing {tuple(r['spacing'])} mm")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
