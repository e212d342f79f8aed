#!/usr/bin/env bash
# Re-train the shipped organ prompt table from scratch and say how close it comes to the packaged one.
#
# Runs the exact recipe of scripts/train_default.sh into runs/reproduce_default (its own run folder, so nothing is
# resumed from an earlier run; the frozen-encoder feature cache runs/feature_cache is reused when present), exports
# the table to runs/reproduce_default/table.safetensors (the package is left untouched) and prints the largest
# token difference to organsam/assets/organ_prompts.safetensors.
# Usage (from the repository root): scripts/reproduce_default.sh   (about 10-15 minutes on a 2-core CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
OUT=runs/reproduce_default
rm -rf "$OUT"
EXPORT=0 PYTHON="$PYTHON" scripts/train_default.sh "out_dir=$OUT"
"$PYTHON" -m organsam.cli.main prompts export "$OUT/model.safetensors" "$OUT/table.safetensors" \
  --command "scripts/train_default.sh out_dir=$OUT" --compare-to packaged
