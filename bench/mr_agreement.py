"""Text prompts on MR: agreement of the pipeline's masks with TS-MR's labels (``../shared/data/ts_mr``).

The CT atlas is registered onto a pseudo-CT of the MR (``organsam/priors/pseudo_ct.py``), affine only. Rows: the
shipped pipeline, the atlas masks alone, and the atlas registered with the Demons stage kept (what the pseudo-CT
registration leaves out). TS-MR's labels are TotalSegmentator-MR predictions, so this is agreement, not accuracy.
The pipeline is scored with and without box search (``organsam/inference/box_search.py``, on by default for MR)
and on the label map it writes (as ``bench/quality.py`` scores it: where two masks overlap,
the smaller organ holds the voxel) and on each organ's own mask.

    .venv/bin/python bench/mr_agreement.py [--organs liver spleen kidney_left kidney_right]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from organsam.inference.options import resolve_organs  # noqa: E402
from organsam.inference.pipeline import run_segmentation  # noqa: E402
from organsam.inference.predictor_factory import build_predictor  # noqa: E402
from organsam.io import load_labels, load_volume  # noqa: E402
from organsam.priors import AtlasPrior, RegistrationSettings, default_atlas, registration_image  # noqa: E402
from organsam.vocabulary import labelmap_info  # noqa: E402


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.environ.get("ORGANSAM_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--organs", nargs="+", default=["liver", "spleen", "kidney_left", "kidney_right"])
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data = Path(args.data) / "ts_mr"
    t0 = time.perf_counter()
    vol = load_volume(data / "image.nii.gz")
    ref = load_labels(data / "label_ts_mr.nii.gz", vol)
    info = labelmap_info("totalsegmentator_mr")
    own = {o: np.isin(ref, info.values_for(o)) for o in args.organs}
    organs = resolve_organs(list(args.organs))
    res = run_segmentation(build_predictor(progress=False), vol, organs)
    plain = build_predictor(progress=False)
    plain.box_search = False  # the prior boxes as registration placed them (box search is on for MR by default)
    res_plain = run_segmentation(plain, vol, organs)
    rows = {
        "organsam segment, label map written (pseudo-CT, affine)": {
            o: res.labels == v for v, o in res.label_table.items()
        },
        "organsam segment, each organ's own mask (overlaps kept)": {o: res.masks[o] for o in args.organs},
        "organsam segment without box search, label map written": {
            o: res_plain.labels == v for v, o in res_plain.label_table.items()
        },
    }
    atlas = AtlasPrior(default_atlas()).fit(vol)
    rows["atlas masks alone (pseudo-CT, affine)"] = {o: atlas.mask(o) for o in args.organs}
    demons = AtlasPrior(default_atlas(), settings=RegistrationSettings()).fit(registration_image(vol), vol.spacing)
    rows["atlas masks alone (pseudo-CT, affine + Demons)"] = {o: demons.mask(o) for o in args.organs}
    out = [
        "## Text prompts on MR (ts_mr): Dice with TotalSegmentator-MR labels",
        "",
        f"Command: `python bench/mr_agreement.py {' '.join(sys.argv[1:])}`. Total {time.perf_counter() - t0:.0f} s.",
        "",
        "| method | " + " | ".join(args.organs) + " | mean |",
        "|:---|" + "---:|" * (len(args.organs) + 1),
    ]
    for name, masks in rows.items():
        d = [dice(masks[o], own[o]) for o in args.organs]
        out.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in d) + f" | **{np.mean(d):.3f}** |")
    print("\n".join(out))


if __name__ == "__main__":
    main()
