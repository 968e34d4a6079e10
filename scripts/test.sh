#!/usr/bin/env bash
# Set up and run the whole test suite (CPU only, offline). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements-dev.txt
# The browser test drives Debian's Chromium (and needs a CJK font for the Chinese UI);
# install them when we can (root with apt).
if { [ ! -x /usr/bin/chromium ] || ! fc-list 2>/dev/null | grep -qi wqy; } && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-zenhei >/dev/null
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
