#!/usr/bin/env bash
# Leave-one-patient-out check of the shipped organ_prompts checkpoint on the AMOS case it was trained on.
#
# The packaged table (scripts/train_default.sh) is trained on ts_a, ts_b_dicom and amos_0001_slab and validated
# on amos_0013_slab. This trains the same recipe with amos_0001 held out instead (ts_a, ts_b, amos_0013),
# exports that table to runs/lopo_amos0001/table.safetensors (the package is left untouched) and scores it on
# amos_0001_slab with bench/quality.py (rows: the pipeline without and with the learned tokens). Together with
# `python bench/quality.py --cases amos_0013_slab --rows organsam organ_prompts` (the packaged table) this gives
# every manually labelled case a score from a table that never saw it.
#
# Usage (from the repository root): scripts/lopo_organ_prompts.sh [--json out.json]
# About 10-15 minutes on a 2-core CPU (resumes an interrupted training run). Environment: PYTHON, ORGANSAM_DATA.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
OUT=runs/lopo_amos0001
EXPORT=0 PYTHON="$PYTHON" scripts/train_default.sh "out_dir=$OUT" 'data.options.cases=[ts_a,ts_b,amos_0013]'
"$PYTHON" -m organsam.cli.main prompts export "$OUT/model.safetensors" "$OUT/table.safetensors" \
  --command "scripts/train_default.sh out_dir=$OUT data.options.cases=[ts_a,ts_b,amos_0013]"
"$PYTHON" bench/quality.py --cases amos_0001_slab --rows organsam organ_prompts \
  --organ-prompts "$OUT/table.safetensors" "$@"
