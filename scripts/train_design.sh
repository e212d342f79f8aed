#!/usr/bin/env bash
# Train a research design's shipped checkpoint on this machine's CPU and put it into the package.
#
#   design  crisp_sam2, seg_sam or pg_sam (organsam/configs/<design>.yaml)
#   data    ../shared/data: train ts_a, ts_b_dicom, amos_0001_slab; amos_0013_slab is never trained on
#   config  organsam/configs/train_<design>.yaml (frozen LiteMedSAM encoder over cached features, shared by the
#           designs in runs/feature_cache; a run of under an hour on a 2-core CPU; rerun to resume)
#   output  runs/train_<design>/ (model.safetensors + model.json, metrics.csv, val.csv), then
#           organsam/assets/design_<design>.safetensors and .json (scripts/ship_design.sh: float16 when the file is
#           over 25 MB), their SHA-256 in organsam/assets/SHA256SUMS;
#           `organsam segment --design <design>` then uses it (--checkpoint packaged)
#
# Usage (from the repository root):
#   scripts/train_design.sh pg_sam                   # train (or resume) and export
#   EXPORT=0 scripts/train_design.sh pg_sam steps=50 # a shorter run, not exported
# Environment: ORGANSAM_DATA (shared data folder, default ../shared/data), PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
EXPORT="${EXPORT:-1}"
DESIGN="${1:?usage: scripts/train_design.sh DESIGN [key=value ...]}"
shift
case "$DESIGN" in crisp_sam2|seg_sam|pg_sam) ;; *) echo "train_design.sh: design must be crisp_sam2, seg_sam or pg_sam, got $DESIGN" >&2; exit 2;; esac
"$PYTHON" -m organsam.cli.main train --config "train_$DESIGN" "$@"
if [ "$EXPORT" = "1" ]; then
  OUT_DIR="runs/train_$DESIGN"
  for a in "$@"; do case "$a" in out_dir=*) OUT_DIR="${a#out_dir=}";; esac; done
  PYTHON="$PYTHON" bash scripts/ship_design.sh "$DESIGN" "$OUT_DIR"
fi
