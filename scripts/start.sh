#!/usr/bin/env bash
# Set up (first run only takes minutes) and start the studio on http://127.0.0.1:7860.
# Works without a GPU and without internet access, on the built-in demo model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements.txt
exec .venv/bin/python app.py "$@"
