"""The README's main job: find a real CT and segment it with text prompts.

Input, in order: ``--ct PATH`` (``make demo CT=...``), the shared data CT (``../shared/data/ts_a``), or
TotalSegmentator's public example CT (Apache-2.0) downloaded from its repository and checked against
its SHA-256. Outputs go to ``-o`` (default ``outputs/demo``) through ``organsam segment``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import urllib.request
from pathlib import Path

logger = logging.getLogger("organsam.demo")

EXAMPLE_URL = (
    "https://github.com/wasserth/TotalSegmentator/raw/0e65a448d557382b1e925276212b3bec7f5aff83/"
    "tests/reference_files/example_ct.nii.gz"
)
EXAMPLE_SHA256 = "dbd3ae6d614d1d7ef3a46925c30c70038ed52da6b37fdd6afdc7b9b71387e3e1"
CACHE = Path(os.environ.get("ORGANSAM_HOME", Path.home() / ".cache" / "organsam")) / "example_ct.nii.gz"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def fetch_example(dest: Path = CACHE) -> Path:
    """Download TotalSegmentator's example CT once, verify its hash, return its path."""
    if dest.is_file() and _sha256(dest) == EXAMPLE_SHA256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".part")
    logger.warning("downloading the example CT from %s", EXAMPLE_URL)
    try:
        with urllib.request.urlopen(EXAMPLE_URL, timeout=30) as r, open(tmp, "wb") as f:
            f.write(r.read())
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise SystemExit(
            f"demo: no CT given, ../shared/data/ts_a/image.nii.gz is absent, and the example CT could not "
            f"be downloaded from {EXAMPLE_URL} ({e}). Give a CT: make demo CT=/path/to/ct.nii.gz"
        ) from None
    digest = _sha256(tmp)
    if digest != EXAMPLE_SHA256:
        tmp.unlink(missing_ok=True)
        raise SystemExit(f"demo: downloaded example CT has SHA-256 {digest}, expected {EXAMPLE_SHA256}; not used")
    os.replace(tmp, dest)
    return dest


def resolve_ct(ct: str, shared_ct: str) -> Path:
    if ct:
        p = Path(ct)
        if not p.exists():
            raise SystemExit(f"demo: CT={ct}: no such file or folder")
        return p
    if shared_ct and Path(shared_ct).is_file():
        return Path(shared_ct)
    return fetch_example()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ct", default="", help="CT file or DICOM folder (default: shared data or example CT)")
    ap.add_argument("--shared-ct", default="../shared/data/ts_a/image.nii.gz")
    ap.add_argument("-o", "--output", default="outputs/demo")
    ap.add_argument("--organs", default="liver, spleen, left kidney, right kidney, aorta")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ct = resolve_ct(args.ct, args.shared_ct)
    logger.info("demo: segmenting %s -> %s (%s)", ct, args.output, args.organs)
    from organsam.cli.main import main as cli

    return cli(["segment", "-i", str(ct), "-o", args.output, "--organs", args.organs])


if __name__ == "__main__":
    sys.exit(main())
