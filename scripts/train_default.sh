#!/usr/bin/env bash
# Train the shipped default checkpoint and export it into the package.
#
#   design  organ_prompts (organsam/configs/organ_prompts.yaml): frozen LiteMedSAM + learned organ prompt tokens
#   data    ../shared/data: train ts_a, ts_b_dicom, amos_0001_slab; amos_0013_slab is never trained on
#   config  organsam/configs/train_organ_prompts.yaml (200 steps x batch 16, AdamW 1e-3, cosine, cached encoder
#           features, atlas-like box jitter); about 10 minutes on a 2-core CPU (first run: + ~3 min to cache)
#   output  runs/organ_prompts/ (model.safetensors + model.json, metrics.csv, val.csv), then
#           organsam/assets/organ_prompts.safetensors (the packaged table) and its SHA-256 in organsam/assets/SHA256SUMS
#
# Leave-one-patient-out check of this recipe: scripts/lopo_organ_prompts.sh (amos_0001 held out).
#
# Usage (from the repository root):
#   scripts/train_default.sh                          # train (or resume) and export
#   EXPORT=0 scripts/train_default.sh out_dir=runs/lopo 'data.options.cases=[ts_a,ts_b,amos_0013]'
#                                                     # a leave-one-patient-out run (amos_0001 held out), not exported;
#                                                     # export it elsewhere to score it with bench/quality.py --organ-prompts
# Environment: ORGANSAM_DATA (shared data folder, default ../shared/data), PYTHON (default .venv/bin/python).
# The research designs train with organsam/configs/train_default.yaml (the unified design; GPU-sized budget):
#   python -m organsam.cli.main train --config train_default
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
EXPORT="${EXPORT:-1}"
ARGS=(--config train_organ_prompts data.feature_cache_dir=runs/feature_cache progress=false "$@")
"$PYTHON" -m organsam.cli.main train "${ARGS[@]}"
if [ "$EXPORT" = "1" ]; then
  OUT_DIR=runs/organ_prompts
  for a in "$@"; do case "$a" in out_dir=*) OUT_DIR="${a#out_dir=}";; esac; done
  "$PYTHON" -m organsam.cli.main prompts export "$OUT_DIR/model.safetensors" \
    organsam/assets/organ_prompts.safetensors --command "scripts/train_default.sh $*"
  bash scripts/update_asset_sums.sh
  echo "exported organsam/assets/organ_prompts.safetensors ($(grep organ_prompts organsam/assets/SHA256SUMS))"
fi
