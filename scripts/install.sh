#!/usr/bin/env bash
# Install medvision and everything its tests import into ./.venv, with a CPU build of torch.
#
#   bash scripts/install.sh             # the README's first command
#   bash scripts/install.sh --dry-run   # print the pip commands it would run, change nothing
#
# torch is installed (pinned) before anything that depends on it: `pip install monai` on its
# own would resolve torch from PyPI, which on Linux x86_64 is a multi-GB CUDA build. Where
# torch comes from, first match wins:
#   1. $TORCH_INDEX_URL, when set (a GPU machine: https://download.pytorch.org/whl/cu128);
#   2. a torch wheel of the pinned version that pip finds without an index (a wheel folder
#      in pip's configuration, e.g. find-links = /opt/wheels): used as pip is configured;
#   3. Linux x86_64: PyTorch's CPU index, https://download.pytorch.org/whl/cpu;
#   4. anywhere else (macOS, Windows, Linux aarch64): PyPI, whose torch there is CPU-only.
# When the extras bring nnU-Net ([nnunet], or [test], which pulls it in), torchvision comes
# next, from the same place as torch: nnunetv2 -> dynamic-network-architectures -> timm
# needs it, and PyPI's Linux torchvision is a CUDA build that does not import next to a CPU
# torch ("operator torchvision::nms does not exist"). The rule, first match wins:
#   1. $TORCH_INDEX_URL, when set (the CUDA torchvision that matches that torch);
#   2. a torchvision wheel of the matching version in a folder pip is configured to use;
#   3. Linux x86_64: PyTorch's CPU index;
#   4. anywhere else: PyPI, whose torchvision there is the CPU build.
# Where none of these gives a torchvision that imports (PyTorch's index unreachable, pip
# falling back to an index of its configuration that holds PyPI's CUDA build), the install
# goes on with a warning: nnU-Net's predictor and everything medvision runs never import
# torchvision, and MONAI treats an unimportable one as absent.
# Then medvision itself, editable, with the extras the tests need ('.[test]', which pulls
# in [postgres], [scale], [training] and [nnunet]).
#
# Settings (environment), for other uses of the same steps:
#   MEDVISION_VENV=DIR        the virtual environment (default ./.venv; made if missing)
#   MEDVISION_EXTRAS=a,b      the extras (default test; empty: the core only)
#   MEDVISION_EDITABLE=0      install a copy, as a user's `pip install .` does (the container
#                             image, tests/test_packaging.py); default 1, editable
#   PYTHON=python3.11         the interpreter the venv is made from
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.13.0
# The torchvision release built against TORCH_VERSION (pinned in pyproject's [nnunet] too).
TORCHVISION_VERSION=0.28.0
CPU_INDEX=https://download.pytorch.org/whl/cpu
PYTHON="${PYTHON:-python3}"
VENV="${MEDVISION_VENV:-.venv}"
EXTRAS="${MEDVISION_EXTRAS-test}"
EDITABLE="${MEDVISION_EDITABLE:-1}"
DRY_RUN=0
if [ "${1:-}" = "--dry-run" ]; then DRY_RUN=1; fi

run() {
    if [ "$DRY_RUN" = 1 ]; then echo "$*"; else "$@"; fi
}

# The pip that probes for a local wheel: the venv's once it exists, else the interpreter's.
probe_pip() {
    if [ -x "$VENV/bin/python" ]; then "$VENV/bin/python" -m pip "$@"; else "$PYTHON" -m pip "$@"; fi
}

# pip's arguments for installing torch==$TORCH_VERSION, or another package built against
# it such as torchvision (the rule above; $1 = name==version), one per line.
torch_source() {
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
        printf '%s\n' --index-url "$TORCH_INDEX_URL"
        return
    fi
    # A resolve without an index, without installing: succeeds only when a wheel of this
    # version lies in a folder pip is configured to look in.
    if probe_pip install --dry-run --ignore-installed --no-index --no-deps -q \
        "$1" >/dev/null 2>&1; then
        return
    fi
    if [ "${MEDVISION_PLATFORM:-$(uname -sm)}" = "Linux x86_64" ]; then
        printf '%s\n' --index-url "$CPU_INDEX"
    fi
}

# Whether the extras bring nnU-Net (and with it timm -> torchvision).
wants_nnunet() {
    case ",$EXTRAS," in *,nnunet,* | *,test,*) return 0 ;; esac
    return 1
}

if [ ! -x "$VENV/bin/python" ]; then
    run "$PYTHON" -m venv "$VENV"
fi
mapfile -t TORCH_ARGS < <(torch_source "torch==$TORCH_VERSION")
run "$VENV/bin/python" -m pip install -q --upgrade pip
run "$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION" "${TORCH_ARGS[@]}"
if wants_nnunet; then
    mapfile -t VISION_ARGS < <(torch_source "torchvision==$TORCHVISION_VERSION")
    # --no-deps: torch stays the one just installed, never re-resolved from this index;
    # torchvision's other needs (numpy, pillow) come with medvision's install below.
    run "$VENV/bin/python" -m pip install -q --retries 1 --no-deps \
        "torchvision==$TORCHVISION_VERSION" "${VISION_ARGS[@]}"
    if [ "$DRY_RUN" = 0 ] && ! "$VENV/bin/python" -c "import torchvision" >/dev/null 2>&1; then
        echo "install.sh: warning: the torchvision $TORCHVISION_VERSION installed does not" \
            "import next to this torch (no build that matches it was reachable); nnU-Net's" \
            "predictor does not need it." >&2
    fi
fi
TARGET="."
if [ -n "$EXTRAS" ]; then TARGET=".[$EXTRAS]"; fi
if [ "$EDITABLE" = 1 ]; then
    run "$VENV/bin/python" -m pip install -q -e "$TARGET"
else
    run "$VENV/bin/python" -m pip install -q "$TARGET"
fi
if [ "$DRY_RUN" = 0 ]; then
    echo "medvision installed in $(cd "$VENV" && pwd)"
fi
