"""Peak memory and wall time of the command a user runs: ``organsam segment`` on a CT file, outputs written.

The case (``bench/_common.py``; default ``ts_a_300``, TS-A resampled to 512x512x300) is written as an int16 NIfTI
into a temporary folder, then ``organsam segment -i <file> --organs "<the 13 AMOS organs>" -o <folder>`` runs in a
child process (reading the file, every stage, and writing the label map, the masks and the report); its peak
RSS is read with ``getrusage(RUSAGE_CHILDREN)``. Extra arguments after ``--`` go to ``organsam segment`` (e.g.
``-- --design pg_sam``).

    .venv/bin/python bench/cli_memory.py [--case ts_a_300] [-- --design pg_sam]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from _common import AMOS13, CASES, load_case

from organsam.vocabulary import load_vocabulary


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", default="ts_a_300", choices=CASES)
    args = ap.parse_args(argv)
    vol, note = load_case(args.case)
    organs = ", ".join(load_vocabulary()[oid].name for oid in AMOS13)
    with tempfile.TemporaryDirectory(prefix="organsam-cli-memory-") as tmp:
        path = Path(tmp) / f"{args.case}.nii.gz"
        data = np.rint(vol.to_ijk_layout(vol.array)).astype(np.int16)
        nib.save(nib.Nifti1Image(data, vol.ijk_affine), str(path))
        del vol, data
        cmd = [str(Path(sys.executable).with_name("organsam")), "segment", "-i", str(path), "--organs", organs]
        cmd += ["-o", str(Path(tmp) / "out"), "-q", *extra]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
        written = sorted(p.name for p in (Path(tmp) / "out").glob("*"))
    print(f"case {args.case}: {note}")
    print(f"command: organsam segment -i {args.case}.nii.gz --organs <13 AMOS organs> -o out -q {' '.join(extra)}")
    print(f"exit {proc.returncode}, {wall:.1f} s, peak RSS {peak:.0f} MB, wrote {len(written)} files")
    if proc.returncode != 0:
        print(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no error message")
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
