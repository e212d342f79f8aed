"""What segmenting on fewer slices costs: ``segment(min_slice_mm=...)`` against every input slice.

``organsam.segment`` runs the model on slices at least ``min_slice_mm`` apart (default 1.5 mm) and
interpolates the masks back onto the input slices. None of our labelled CTs has slices that thin, so this
measures the effect of the same step at a coarser scale on real scans: each case is segmented once on
every slice and once with ``min_slice_mm`` set to ``factor`` x its slice thickness (2x: every other slice),
and the per-organ Dice of the two outputs (agreement), the Dice of each against the case's reference
labels, and the wall times are printed.

    .venv/bin/python bench/slice_spacing.py [--cases ts_b amos_0013_slab] [--factor 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from organsam.inference.segment import segment  # noqa: E402
from organsam.inference.volume_predictor import VolumePredictor  # noqa: E402
from organsam.io import load_labels, load_volume  # noqa: E402
from organsam.vocabulary import labelmap_info  # noqa: E402

#: case -> (image, labels, label map name, organs it labels)
CASES = {
    "ts_b": (
        "ts_b_dicom/dicom",
        "ts_b_dicom/label_ts_v2.nii.gz",
        "totalsegmentator_v2",
        ["liver", "spleen", "stomach", "aorta", "inferior_vena_cava", "pancreas", "gallbladder"],
    ),
    "amos_0013_slab": (
        "amos_0013_slab/image.nii.gz",
        "amos_0013_slab/label.nii.gz",
        "amos22",
        ["liver", "spleen", "kidney_right", "kidney_left", "gallbladder", "stomach", "aorta", "pancreas"],
    ),
    "ts_a": (
        "ts_a/image.nii.gz",
        "ts_a/label_ts_v2_fast.nii.gz",
        "totalsegmentator_v2",
        ["liver", "spleen", "kidney_right", "kidney_left", "stomach", "aorta", "pancreas"],
    ),
}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    s = int(a.sum() + b.sum())
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("ORGANSAM_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--cases", nargs="+", default=["ts_b", "amos_0013_slab"], choices=list(CASES))
    ap.add_argument("--factor", type=float, default=2.0, help="min_slice_mm = factor x slice thickness")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    data = Path(args.data)
    if not data.is_dir():
        print(f"shared data folder {data} not found: set --data or $ORGANSAM_DATA", file=sys.stderr)
        return 2
    lines = [
        f"Command: `python bench/slice_spacing.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "",
        "| case | organ | Dice native vs ref | Dice coarse vs ref | agreement native/coarse |",
        "|:---|:---|---:|---:|---:|",
    ]
    doc: dict = {"factor": args.factor, "cases": {}}
    for case in args.cases:
        img, lab, lm, organs = CASES[case]
        vol = load_volume(data / img)
        ref = load_labels(data / lab, vol)
        info = labelmap_info(lm)
        pred = VolumePredictor(progress=False)
        out, times = {}, {}
        for name, mm in (("native", 0.0), ("coarse", args.factor * float(vol.spacing[0]))):
            t = time.perf_counter()
            res = segment(vol, organs, quiet=True, predictor=pred, min_slice_mm=mm)
            times[name] = time.perf_counter() - t
            out[name] = (res.masks, res.report["model_slices"])
            pred = VolumePredictor(progress=False)  # fresh: no embeddings shared between the two runs
        rows = {}
        for o in organs:
            r = np.isin(ref, info.values_for(o))
            rows[o] = (
                dice(out["native"][0][o], r),
                dice(out["coarse"][0][o], r),
                dice(out["native"][0][o], out["coarse"][0][o]),
            )
            lines.append(f"| {case} | {o} | {rows[o][0]:.3f} | {rows[o][1]:.3f} | {rows[o][2]:.3f} |")
        means = np.mean(np.array(list(rows.values())), axis=0)
        lines.append(f"| {case} | **mean** | {means[0]:.3f} | {means[1]:.3f} | {means[2]:.3f} |")
        lines.append(
            f"| {case} | slices / seconds | {out['native'][1]} / {times['native']:.1f} | "
            f"{out['coarse'][1]} / {times['coarse']:.1f} | |"
        )
        doc["cases"][case] = {"organs": rows, "slices": {k: v[1] for k, v in out.items()}, "seconds": times}
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
