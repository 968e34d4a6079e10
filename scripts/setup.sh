#!/usr/bin/env bash
# Create .venv and install the studio's pinned requirements (idempotent; safe to re-run).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# torch with its CUDA libraries takes about 6 GB in .venv; say so up front rather than fail mid-install.
free_kb=$(df -Pk . | awk 'NR==2 {print $4}')
if [ ! -x .venv/bin/python ] && [ "${free_kb:-0}" -lt $((8 * 1024 * 1024)) ]; then
  echo "warning: $((free_kb / 1024)) MB free on the disk that holds $(pwd); installing needs about 8 GB" \
       "(torch and its CUDA libraries). Free some space if the install stops with 'No space left on device'." >&2
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r "${1:-requirements.txt}"
