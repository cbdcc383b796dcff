#!/usr/bin/env bash
# Set up avtools in ./.venv without root: torch (CPU build unless a CUDA one is asked for), ffmpeg from pip.
#   bash install.sh            # the package and its runtime dependencies
#   bash install.sh test       # ... plus the test tools (pytest, moto server)
# TORCH_SPEC overrides the torch requirement (default torch==2.13.0, the CPU wheel on the dev machines).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
extra=""
[ "${1:-}" = "test" ] && extra="[test]"
.venv/bin/python -m pip install -q -e ".${extra}"
.venv/bin/avtools --help >/dev/null
echo "avtools installed in $(pwd)/.venv (activate with: source .venv/bin/activate)"
