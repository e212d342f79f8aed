"""Would several atlases place organs better than one? Atlas-alone Dice of single atlases and of their fusion.

Every labelled CT in the shared data folder is an atlas candidate; the scored case is never one of the atlases
(leave-one-out). Each atlas is registered onto the target as ``segment`` does (z-level search, affine, Demons);
fusion is a vote per voxel: an organ is kept where at least half of the atlases whose field of view covers the
voxel have it. Dice % of the warped masks alone (no LiteMedSAM), Synapse-8 organs, manual AMOS labels.

    .venv/bin/python bench/multi_atlas.py [--cases amos_0013_slab amos_0001_slab]
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

from organsam.io import load_labels, load_volume  # noqa: E402
from organsam.priors import Atlas, AtlasPrior, AtlasResult, default_atlas, warp_labels  # noqa: E402
from organsam.vocabulary import labelmap_info  # noqa: E402

SYNAPSE8 = ["aorta", "gallbladder", "kidney_left", "kidney_right", "liver", "pancreas", "spleen", "stomach"]


def atlases(data: Path) -> dict[str, Atlas]:
    """The shipped atlas (ts_a) and every other labelled CT of the shared data folder."""
    out = {
        "ts_a": default_atlas(),
        "ts_b": Atlas.from_files(
            data / "ts_b_dicom" / "dicom",
            data / "ts_b_dicom" / "label_ts_v2.nii.gz",
            "totalsegmentator_v2",
            name="ts_b",
        ),
    }
    for case in ("amos_0001_slab", "amos_0013_slab"):
        out[case] = Atlas.from_files(data / case / "image.nii.gz", data / case / "label.nii.gz", "amos22", name=case)
    return out


def fuse(
    results: list[AtlasResult], used: list[Atlas], shape: tuple[int, ...], spacing: tuple[float, float, float]
) -> dict[str, np.ndarray]:
    """Per organ: voxels that at least half of the atlases covering them place the organ on."""
    votes = {o: np.zeros(shape, np.float32) for o in SYNAPSE8}
    cover = np.zeros(shape, np.float32)
    for res, atlas in zip(results, used):
        cover += warp_labels(np.ones(atlas.image.shape, np.uint8), res.transform, shape, spacing, atlas.spacing) > 0
        for o in SYNAPSE8:
            votes[o] += res.mask(o)
    return {o: (votes[o] > 0) & (votes[o] >= 0.5 * cover) for o in SYNAPSE8}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.environ.get("ORGANSAM_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--cases", nargs="+", default=["amos_0013_slab", "amos_0001_slab"])
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data = Path(args.data)
    t0 = time.perf_counter()
    pool = atlases(data)
    amos = labelmap_info("amos22")
    lines = [
        "## Multi-atlas: atlas-alone Dice (%) of single atlases and of their fusion, case left out",
        "",
        f"Command: `python bench/multi_atlas.py {' '.join(sys.argv[1:])}`  ",
        "",
    ]
    for case in args.cases:
        vol = load_volume(data / case / "image.nii.gz")
        ref = load_labels(data / case / "label.nii.gz", vol)
        own = {o: np.isin(ref, amos.values_for(o)) for o in SYNAPSE8}
        names = [n for n in pool if n != case]
        fitted = {n: AtlasPrior(pool[n]).fit(vol) for n in names}
        rows = {n: {o: fitted[n].mask(o) for o in SYNAPSE8} for n in names}
        for combo in (["ts_a", "ts_b"], ["ts_a"] + [n for n in names if n.startswith("amos")], names):
            rows[" + ".join(combo)] = fuse(
                [fitted[n] for n in combo], [pool[n] for n in combo], vol.array.shape, vol.spacing
            )
        lines += [
            f"### {case}",
            "",
            "| atlases | " + " | ".join(SYNAPSE8) + " | mean |",
            "|:---|" + "---:|" * (len(SYNAPSE8) + 1),
        ]
        for name, masks in rows.items():
            d = [200 * (masks[o] & own[o]).sum() / max(masks[o].sum() + own[o].sum(), 1) for o in SYNAPSE8]
            lines.append(f"| {name} | " + " | ".join(f"{v:.1f}" for v in d) + f" | **{np.mean(d):.1f}** |")
        lines.append("")
    lines.append(f"Total {time.perf_counter() - t0:.0f} s.")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
