"""Speed and accuracy of image-encoder variants (the cost that dominates whole-volume segmentation).

For each variant: seconds per 256x256 slice (best of ``--repeat`` timed passes over ``--slices`` real slices
of AMOS 0013, variants interleaved so that background load hits them alike), speed-up over the reference
encoder (``SamCore.encode`` in float32, i.e. the LiteMedSAM encoder as it is), the embedding's relative
error, and the golden Dice protocol (AMOS 0013, tight reference boxes per slice; see
``tests/model/test_model_golden.py``): per-organ Dice and the largest per-organ |Dice - Dice of ref|. A
variant keeps the reference accuracy when that difference is <= 0.005.

Variants: ``ref`` (core.encode fp32), ``ref_bf16`` (core.encode under bf16 autocast), ``fast``
(FastImageEncoder fp32: folded batch norms, channels-last), ``fast_nchw`` (same, channels-first),
``fast_bf16``, ``fast_int8`` (dynamic int8 linear layers), ``fast_compile`` (torch.compile of ``fast``,
with ``--compile``), ``fast_bf16_dec`` (``fast_bf16`` with the mask decoder also under bf16 autocast in the
Dice protocol; its timing is the encoder's alone), ``openvino`` / ``openvino_bf16`` (the encoder compiled by
OpenVINO, :mod:`organsam.model.openvino_sam`, the pipeline's CPU runtime; CPU only). CPU seconds (all
threads) are printed beside wall seconds: on a machine shared with other jobs they are the steadier measure.

    .venv/bin/python bench/encoder_speed.py [--device cpu] [--batch-sizes 1 2 4] [--threads N]
        [--variants ref fast fast_bf16] [--no-dice] [--compile] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from _common import data_dir, golden_dice, model_input, sync

from organsam.io import load_volume
from organsam.model.components.fast_image_encoder import FastImageEncoder
from organsam.model.sam_core import SamCore, build_lite_medsam

#: The eight organs of the golden test (tests/model/test_model_golden.py); the adrenal glands, oesophagus, IVC
#: and duodenum have Dice 0.2-0.8 even in float32, where a handful of pixels swing the score.
GOLDEN8 = ("spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "aorta", "pancreas")
VARIANTS = (
    "ref",
    "ref_bf16",
    "fast",
    "fast_nchw",
    "fast_bf16",
    "fast_int8",
    "fast_compile",
    "fast_bf16_dec",
    "openvino",
    "openvino_bf16",
)


def make_variant(name: str, core: SamCore, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """(B, 3, 256, 256) -> (B, 256, 64, 64) float32 encoder function of a variant."""
    if name in ("ref", "ref_bf16"):
        bf16 = name == "ref_bf16"

        def ref(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                return core.encode(x, keep_levels=False).embedding.float()

        return ref
    if name.startswith("openvino"):
        from organsam.model.openvino_sam import OpenVinoSam

        return OpenVinoSam(core, precision="bf16" if name.endswith("bf16") else "fp32").encode
    kw = {
        "fast": {},
        "fast_nchw": {"channels_last": False},
        "fast_bf16": {"precision": "bf16"},
        "fast_int8": {"quantize": True},
        "fast_compile": {},
        "fast_bf16_dec": {"precision": "bf16"},
    }[name]
    fast = FastImageEncoder(core.image_encoder, **kw).to(device)
    if name == "fast_compile":
        compiled = torch.compile(fast._stages)

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return compiled(x.contiguous(memory_format=torch.channels_last)).float()

        t0 = time.perf_counter()
        run(torch.rand(1, 3, 256, 256, device=device))
        print(f"  torch.compile warm-up (compile) {time.perf_counter() - t0:.1f} s", flush=True)
        return run
    return fast


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--variants",
        nargs="+",
        default=["ref", "ref_bf16", "fast", "fast_nchw", "fast_bf16", "fast_int8"],
        choices=VARIANTS,
    )
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the fast encoder")
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 2, 4])
    ap.add_argument("--slices", type=int, default=4, help="slices per timed pass (the slab's 11 repeated beyond 11)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--no-dice", action="store_true", help="skip the golden Dice protocol")
    ap.add_argument("--json", default=None, help="write the results to this JSON file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    variants = list(dict.fromkeys(args.variants + (["fast_compile"] if args.compile else [])))
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")

    core = build_lite_medsam().to(device).eval()
    vol = load_volume(data_dir() / "amos_0013_slab" / "image.nii.gz")
    images = model_input(vol)
    if len(images) < args.slices:  # GPU batches larger than the slab: its slices again, in order
        images = np.concatenate([images] * -(-args.slices // len(images)))
    images = images[: max(args.slices, 1)]
    fns = {v: make_variant(v, core, device) for v in variants}

    x = torch.from_numpy(images[:2]).to(device)
    ref_emb = fns["ref"](x) if "ref" in fns else make_variant("ref", core, device)(x)
    rel_err = {v: float((fn(x) - ref_emb).norm() / ref_emb.norm()) for v, fn in fns.items()}

    results: dict[str, dict] = {v: {"rel_err": rel_err[v], "s_per_slice": {}, "cpu_s_per_slice": {}} for v in variants}
    for bs in args.batch_sizes:
        best = {v: float("inf") for v in variants}
        best_cpu = {v: float("inf") for v in variants}
        for _ in range(args.repeat):
            for v, fn in fns.items():  # interleaved: background load spreads over all variants
                with torch.inference_mode():
                    fn(torch.from_numpy(images[:bs]).to(device))  # warm-up for this shape
                    sync(device)
                    t0, c0 = time.perf_counter(), time.process_time()
                    for i in range(0, len(images), bs):
                        fn(torch.from_numpy(images[i : i + bs]).to(device))
                    sync(device)
                best[v] = min(best[v], (time.perf_counter() - t0) / len(images))
                best_cpu[v] = min(best_cpu[v], (time.process_time() - c0) / len(images))
        for v in variants:
            results[v]["s_per_slice"][bs] = best[v]
            results[v]["cpu_s_per_slice"][bs] = best_cpu[v]
        print(
            f"batch {bs} (wall / CPU s per slice): "
            + ", ".join(f"{v} {best[v]:.3f}/{best_cpu[v]:.3f}" for v in variants),
            flush=True,
        )

    if not args.no_dice:
        for v, fn in fns.items():
            results[v]["dice"] = golden_dice(core, fn, device, decode_bf16=v == "fast_bf16_dec")
        base = results["ref"]["dice"] if "ref" in results else None
        for v in variants:
            if base is not None:
                results[v]["max_dice_diff"] = max(abs(results[v]["dice"][k] - base[k]) for k in base)
                results[v]["max_dice_diff_golden8"] = max(
                    abs(results[v]["dice"][k] - base[k]) for k in GOLDEN8 if k in base
                )

    ref_t = {bs: results["ref"]["s_per_slice"][bs] for bs in args.batch_sizes} if "ref" in results else None
    ref_c = {bs: results["ref"]["cpu_s_per_slice"][bs] for bs in args.batch_sizes} if "ref" in results else None
    print(
        f"\n{'variant':14s} "
        + " ".join(f"{'bs' + str(b) + ' wall/cpu':>14s}" for b in args.batch_sizes)
        + f" {'speed-up':>9s} {'cpu sp-up':>9s} {'rel.err':>9s} {'mean Dice':>9s} {'max|dDice|':>10s}"
    )
    for v in variants:
        r = results[v]
        times = [r["s_per_slice"][b] for b in args.batch_sizes]
        cpus = [r["cpu_s_per_slice"][b] for b in args.batch_sizes]
        speed = (min(ref_t.values()) / min(times)) if ref_t else float("nan")
        cspeed = (min(ref_c.values()) / min(cpus)) if ref_c else float("nan")
        r["speedup_best_vs_ref_best"] = speed
        r["cpu_speedup_best_vs_ref_best"] = cspeed
        dice = r.get("dice")
        mean = f"{np.mean(list(dice.values())):9.4f}" if dice else f"{'-':>9s}"
        dd = f"{r['max_dice_diff']:10.4f}" if "max_dice_diff" in r else f"{'-':>10s}"
        d8 = f"{r['max_dice_diff_golden8']:10.4f}" if "max_dice_diff_golden8" in r else f"{'-':>10s}"
        print(
            f"{v:14s} "
            + " ".join(f"{t:6.3f}/{c:<7.3f}" for t, c in zip(times, cpus))
            + f" {speed:9.2f} {cspeed:9.2f} {r['rel_err']:9.2e} {mean} {dd} {d8}"
        )
    if not args.no_dice and "ref" in results:
        print("\nper-organ Dice (golden protocol, AMOS 0013):")
        organs = list(results["ref"]["dice"])
        print(f"{'variant':14s} " + " ".join(f"{o[:8]:>8s}" for o in organs))
        for v in variants:
            print(f"{v:14s} " + " ".join(f"{results[v]['dice'][o]:8.4f}" for o in organs))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "threads": torch.get_num_threads(), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
