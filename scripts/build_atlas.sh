#!/usr/bin/env bash
# Rebuild the atlas shipped in the package, organsam/assets/atlas_ts_a.npz, from the TotalSegmentator example CT
# (../shared/data/ts_a: image.nii.gz and its TotalSegmentator v2 labels, Apache-2.0; attribution in NOTICE), and
# record its SHA-256 in organsam/assets/SHA256SUMS. The file is lossless (int16 HU, compact uint8 labels, 3 mm).
#   bash scripts/build_atlas.sh            # or DATA=/path/to/shared/data bash scripts/build_atlas.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
DATA="${DATA:-../shared/data}"
if [ ! -f "$DATA/ts_a/image.nii.gz" ]; then
  echo "build_atlas.sh: $DATA/ts_a/image.nii.gz is missing; set DATA to the shared data folder" >&2
  exit 2
fi
"$PYTHON" -m organsam.cli.main atlas build --image "$DATA/ts_a/image.nii.gz" \
  --labels "$DATA/ts_a/label_ts_v2_fast.nii.gz" --labelmap totalsegmentator_v2 --name ts_a \
  --source "TotalSegmentator example CT and its TotalSegmentator v2 labels (wasserth/TotalSegmentator, tests/reference_files, 0e65a44)" \
  --licence Apache-2.0 -o organsam/assets/atlas_ts_a.npz
bash scripts/update_asset_sums.sh
