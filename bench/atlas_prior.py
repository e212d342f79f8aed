"""Benchmark of the atlas organ prior (no learning) on the AMOS slabs of the shared data folder.

For each case: register the atlas (default ``ts_a``) onto the CT, warp its organ labels, and print
per organ the Dice of the warped mask against the AMOS reference labels, plus how well the per-slice
boxes (margin 10 px) cover the reference: ``slices`` = share of reference slices that get a box,
``boxIoU`` = median IoU of the atlas box (no margin) with the reference box on those slices.

    .venv/bin/python bench/atlas_prior.py [--fast] [--cases amos_0013_slab amos_0001_slab] [--data DIR]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from organsam.io import load_labels, load_volume  # noqa: E402
from organsam.priors import AtlasPrior, default_atlas, mask_to_boxes  # noqa: E402
from organsam.vocabulary import load_labelmap  # noqa: E402

SYNAPSE8 = ["spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "aorta", "pancreas"]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / s if s else float("nan")


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = ix * iy
    area = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
    return inter / area


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("ORGANSAM_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--cases", nargs="+", default=["amos_0013_slab", "amos_0001_slab"])
    ap.add_argument("--fast", action="store_true", help="no Demons stage, coarser grid")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")

    data = Path(args.data)
    prior = AtlasPrior(default_atlas(), fast=args.fast)
    amos = load_labelmap("amos22")
    print(
        f"atlas {prior.atlas.name} {prior.atlas.image.shape} @ {prior.atlas.spacing} mm; "
        f"mode {'fast' if args.fast else 'full'}"
    )
    for case in args.cases:
        vol = load_volume(data / case / "image.nii.gz")
        gt = load_labels(data / case / "label.nii.gz", vol)
        res = prior.fit(vol)
        stages = ", ".join(f"{k} {v:.1f}" for k, v in res.transform.timings.items())
        print(
            f"\n{case} {vol.shape} @ {tuple(round(s, 3) for s in vol.spacing)} mm: fit {res.seconds:.1f} s "
            f"({stages}), z offset {res.transform.z_offset_mm:.0f} mm"
        )
        print(f"  {'organ':22s} {'Dice':>6s} {'slices':>7s} {'boxIoU':>7s}")
        syn = []
        for value, organ in amos.items():
            if organ is None:
                continue
            ref = gt == value
            if not ref.any():
                continue
            m = res.mask(organ)
            d = dice(ref, m)
            ref_boxes = mask_to_boxes(ref, 0)
            pri_boxes = res.boxes(organ, margin_px=10)
            pri_tight = res.boxes(organ, margin_px=0)
            covered = sum(k in pri_boxes for k in ref_boxes) / len(ref_boxes)
            ious = [box_iou(ref_boxes[k], pri_tight[k]) for k in ref_boxes if k in pri_tight]
            iou = float(np.median(ious)) if ious else 0.0
            if organ in SYNAPSE8:
                syn.append(d)
            print(f"  {organ:22s} {d:6.3f} {covered:7.2f} {iou:7.2f}")
        print(f"  {'mean Synapse-8':22s} {np.mean(syn):6.3f}  (over {len(syn)} organs present)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
