#!/usr/bin/env bash
# Train the default organsam checkpoint on the shared data training split.
#
#   design  organsam (organsam/configs/organsam.yaml), frozen LiteMedSAM encoder
#   data    ../shared/data: train ts_a, ts_b_dicom, amos_0001_slab; validate on amos_0013_slab
#   config  organsam/configs/train_default.yaml (2000 steps, batch 8, AdamW 1e-4, warm-up 100, cosine)
#   output  runs/organsam_default/model.safetensors (+ model.json), best.safetensors (best val Dice),
#           metrics.csv, val.csv, checkpoints/ and train_state.pt (rerun the same command to resume)
#
# Usage (from the repository root):
#   scripts/train_default.sh                    # one process: the GPU if there is one, else CPU
#   NPROC=4 scripts/train_default.sh            # DDP with torchrun, 4 processes (one per GPU)
#   scripts/train_default.sh steps=500 out_dir=runs/try    # any key=value override
# Environment: ORGANSAM_DATA (shared data folder, default ../shared/data), PYTHON (default .venv/bin/python).
# Without a GPU a step takes tens of seconds (the TinyViT encoder dominates): for a CPU-only run add
#   data.feature_cache=true   (frozen-encoder features computed once per slice; augmentation is then off)
# and fewer steps. The final choice of design/steps is made by measurement (val.csv, Dice per organ).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
NPROC="${NPROC:-1}"
if [ "$NPROC" -gt 1 ]; then
  exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" \
    -m organsam.cli.main train --config train_default "$@"
fi
exec "$PYTHON" -m organsam.cli.main train --config train_default "$@"
