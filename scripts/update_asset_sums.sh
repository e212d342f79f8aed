#!/usr/bin/env bash
# Record the SHA-256 of every file shipped in organsam/assets in organsam/assets/SHA256SUMS (read by
# organsam/weights.py, checked by `organsam weights` and on every load).
set -euo pipefail
cd "$(dirname "$0")/../organsam/assets"
sha256sum $(ls | grep -v '^SHA256SUMS$' | sort) > SHA256SUMS
cat SHA256SUMS
