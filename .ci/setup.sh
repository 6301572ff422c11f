#!/usr/bin/env bash
# Make .venv ready: the CPU build of torch first (a bare `torch` would pull a multi-GB CUDA build),
# then this project with its dev and ray extras. Re-running is cheap: it reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=".venv/.sftprep-installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0" \
    || python -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
  python -m pip install -q -e ".[dev,ray]"
  touch "$stamp"
fi
