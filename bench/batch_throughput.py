"""Batch throughput: volumes per minute of ``organsam segment`` on a folder, 1 and 2 workers side by side.

The batch is ``--volumes`` real CT slabs from the shared data folder (``../shared/data`` or
``$ORGANSAM_DATA``; by default AMOS 0013 (512x512x11) and AMOS 0001 (768x768x11) in turn, linked under
distinct case ids), segmented with ``--organs`` into a fresh output folder per setting
(``run_batch(..., resume=False)``), so every run does the same work: model building in each worker, every
volume, the manifest. 1 worker runs in the calling process; N > 1 a process pool of N workers with
``cores // N`` torch threads each; ``--ray`` adds a row for a private local Ray instance with 2 actors.

    .venv/bin/python bench/batch_throughput.py [--volumes 4] [--workers 1 2] [--organs "liver, spleen"]
        [--ray] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import data_dir  # noqa: E402

from organsam.inference.batch import available_cores, run_batch  # noqa: E402

CASES = ("amos_0013_slab", "amos_0001_slab")


def make_batch(folder: Path, n: int, cases: list[str]) -> None:
    """``n`` links to the cases' images, in turn, as ``vol00.nii.gz``, ``vol01.nii.gz``, ..."""
    for i in range(n):
        src = data_dir() / cases[i % len(cases)] / "image.nii.gz"
        if not src.exists():
            raise SystemExit(f"{src} is missing: the benchmark needs the shared data folder (see bench/_common.py)")
        (folder / f"vol{i:02d}.nii.gz").symlink_to(src)


def run_setting(batch: Path, work: Path, organs: str, workers: int, ray: bool) -> dict:
    """One batch run into a fresh output folder; its throughput."""
    out = work / (f"ray{workers}" if ray else f"w{workers}")
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    summary = run_batch(batch, organs, out, workers=workers, ray="local" if ray else None, resume=False, progress=False)
    wall = time.perf_counter() - t0
    n_done = summary.done
    if summary.failed:
        logging.warning("%d volumes failed:\n%s", summary.failed, summary.format())
    mean_case = sum(c.seconds for c in summary.cases if c.state == "done") / max(n_done, 1)
    return {
        "backend": summary.backend,
        "workers": workers,
        "volumes": n_done,
        "wall_s": round(wall, 1),
        "volumes_per_min": round(60.0 * n_done / wall, 2),
        "mean_case_s": round(mean_case, 1),
        "threads_per_worker": max(1, available_cores() // workers),
    }  # Ray: CPUs // actors, the same


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--volumes", type=int, default=4, help="volumes in the batch")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare")
    ap.add_argument("--organs", default="liver, spleen")
    ap.add_argument("--cases", nargs="+", default=list(CASES), help="shared-data cases to cycle through")
    ap.add_argument("--ray", action="store_true", help="also run on a local Ray instance with 2 actors")
    ap.add_argument("--json", default=None, help="write the rows here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    rows = []
    with tempfile.TemporaryDirectory(prefix="organsam-batch-bench-") as tmp:
        work = Path(tmp)
        batch = work / "in"
        batch.mkdir()
        make_batch(batch, args.volumes, args.cases)
        for w in args.workers:
            rows.append(run_setting(batch, work, args.organs, w, ray=False))
            print(f"  {rows[-1]}", file=sys.stderr)
        if args.ray:
            rows.append(run_setting(batch, work, args.organs, 2, ray=True))
            print(f"  {rows[-1]}", file=sys.stderr)

    base = rows[0]["volumes_per_min"]
    print(
        f"\nbatch throughput: {args.volumes} volumes ({', '.join(args.cases)}), organs {args.organs!r}, "
        f"{available_cores()} CPU cores"
    )
    header = ["", *[f"{r['backend']} x{r['workers']}" for r in rows]]
    table = [
        ("volumes / min", [f"{r['volumes_per_min']:.2f}" for r in rows]),
        ("speed-up", [f"{r['volumes_per_min'] / base:.2f}x" for r in rows]),
        ("wall s", [f"{r['wall_s']:.1f}" for r in rows]),
        ("mean s / volume (in worker)", [f"{r['mean_case_s']:.1f}" for r in rows]),
        ("torch threads / worker", [str(r["threads_per_worker"]) for r in rows]),
        ("volumes done", [str(r["volumes"]) for r in rows]),
    ]
    w0 = max(len(t[0]) for t in table)
    print(f"{header[0]:<{w0}}  " + "  ".join(f"{h:>12}" for h in header[1:]))
    for name, vals in table:
        print(f"{name:<{w0}}  " + "  ".join(f"{v:>12}" for v in vals))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
