#!/usr/bin/env bash
# Put a trained design checkpoint into the package: SRC_DIR/model.safetensors (+ .json) becomes
# organsam/assets/design_DESIGN.safetensors (+ .json), stored in float16 when the float32 file is over the 25 MB a
# shipped checkpoint may take (organsam.model.checkpoint.resave_checkpoint; loading casts back to float32), and
# organsam/assets/SHA256SUMS is updated. Called by scripts/train_design.sh and scripts/gpu_train_designs.sh.
#
#   scripts/ship_design.sh DESIGN SRC_DIR
# Environment: PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
DESIGN="${1:?usage: scripts/ship_design.sh DESIGN SRC_DIR}"
SRC="${2:?usage: scripts/ship_design.sh DESIGN SRC_DIR}"
LIMIT=$((25 * 1000 * 1000))
dst="organsam/assets/design_$DESIGN.safetensors"
if [ "$(stat -c %s "$SRC/model.safetensors")" -gt "$LIMIT" ]; then
  "$PYTHON" -c "import sys; from organsam.model.checkpoint import resave_checkpoint
resave_checkpoint(sys.argv[1], sys.argv[2], 'float16')" "$SRC/model.safetensors" "$dst"
  chmod 644 "$dst" "organsam/assets/design_$DESIGN.json"
else
  install -m 644 "$SRC/model.safetensors" "$dst"
  install -m 644 "$SRC/model.json" "organsam/assets/design_$DESIGN.json"
fi
bash scripts/update_asset_sums.sh > /dev/null
echo "shipped $dst ($(du -h "$dst" | cut -f1))"
