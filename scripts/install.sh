#!/usr/bin/env bash
# Install medvision into ./.venv on this machine, CPU build of torch first.
#
# torch must be installed (pinned) before anything that depends on it: `pip install monai`
# on its own would resolve torch from PyPI and pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e '.[test]'
echo "medvision installed in $(pwd)/.venv"
