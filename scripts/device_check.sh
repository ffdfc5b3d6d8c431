#!/usr/bin/env bash
# One run on a lent GPU machine (issue #4 item 6): the brainchop tests on the GPU (mindgrab
# included), bench/inference.py on the GPU (AMP off and on) and on the same machine's CPU,
# then, with the time left, `medvision train lesions-unet` (the first, voxel-wise lesion UNet) on the GPU and its evaluation.
#
# The device has torch but not MONAI, pydicom, highdicom, nibabel or pyjpegls, no internet,
# and no ../shared/data. Before calling it, prepare in the repository root (both ignored
# through .git/info/exclude, never committed):
#   .whl/      py3.12 manylinux wheels: monai pydicom highdicom nibabel pyjpegls
#              (pip download --no-deps --only-binary=:all: --python-version 3.12 ...)
#   .devdata/  data.tar.xz (from ../shared/data: ct/lung-pet-ct-dx-A0001,
#              mr/philips-3t-brain/classic-t1, models/brainchop, monai-bundles,
#              ct/edge/philips-head-phantom-study/S2010) and bin/dciodvfy.xz (dicom3tools)
# and run it with carry [".whl", ".devdata"]. Results go to $OUT. Each stage is bounded so
# that a slow one cannot take the others' results with it; at most 7 files land in $OUT
# (the device returns 8). Local rehearsal (CPU, tiny):
#   REHEARSE=1 OUT=/tmp/dev-out scripts/device_check.sh
set -u
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
START=$(date +%s)
TOTAL=${DEVICE_SECONDS:-450}   # the script's own wall-clock budget
STAGES=${STAGES:-tests bench train}  # a second call on the still-warm machine can run "train"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
left() { echo $((TOTAL - ($(date +%s) - START))); }
stage() { echo "== $(date -u +%H:%M:%S) +$(($(date +%s) - START)) s: $*" | tee -a "$OUT/summary.txt"; }

stage setup
# Other engineers' uncommitted edits travel with the working tree: run the committed tree
# (git archive HEAD, packed as .devdata/repo.tar.gz before the call) when it is there.
if [ -f .devdata/repo.tar.gz ] && [ -z "${REHEARSE:-}" ]; then
    WHL=$PWD/.whl DEVDATA=$PWD/.devdata
    rm -rf /tmp/repo && mkdir -p /tmp/repo && tar -xzf .devdata/repo.tar.gz -C /tmp/repo || exit 1
    ln -s "$WHL" /tmp/repo/.whl && ln -s "$DEVDATA" /tmp/repo/.devdata && cd /tmp/repo
    echo "running the tree of commit $(cat .commit 2>/dev/null)" | tee -a "$OUT/summary.txt"
fi
if [ -d .whl ] && [ -z "${REHEARSE:-}${NO_WHEELS:-}" ] && [ ! -d /tmp/site/monai ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
fi
[ -d /tmp/site/monai ] && export PYTHONPATH=/tmp/site
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -f .devdata/data.tar.xz ]; then
    if [ ! -d /tmp/shared/monai-bundles ]; then
        mkdir -p /tmp/shared && tar -xJf .devdata/data.tar.xz -C /tmp/shared || exit 1
    fi
    export MEDVISION_SHARED_DATA=/tmp/shared
fi
DATA=${MEDVISION_SHARED_DATA:-$PWD/../shared/data}
if [ -f .devdata/bin/dciodvfy.xz ]; then
    mkdir -p /tmp/bin && xz -dc .devdata/bin/dciodvfy.xz >/tmp/bin/dciodvfy && chmod +x /tmp/bin/dciodvfy
    export PATH=/tmp/bin:$PATH
fi
export MEDVISION_MODELS_DIR=/tmp/medvision-models  # imported weights: never in the repository
# `medvision models import` / `train` / `evaluate` without medvision/cli/, whose parser
# imports the web API (FastAPI is not on the device).
cat >/tmp/medvision_cmd.py <<'PYEOF'
import argparse, sys
from medvision.pipelines.bundle._cli import add_models_parser
from medvision.training._cli import add_training_parsers
parser = argparse.ArgumentParser(prog="medvision")
sub = parser.add_subparsers()
add_models_parser(sub)
add_training_parsers(sub)
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))
PYEOF
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
    nproc; free -g | head -2
    $PY -c "import torch, monai, pydicom, highdicom; print('python', __import__('sys').version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-', 'monai', monai.__version__, 'pydicom', pydicom.__version__, 'highdicom', highdicom.__version__)"
    command -v dciodvfy
} >>"$OUT/summary.txt" 2>&1
cat "$OUT/summary.txt"

stage "import brainchop models into $MEDVISION_MODELS_DIR"
for m in model5_gw_ae mindgrab; do
    $PY /tmp/medvision_cmd.py models import brainchop "$DATA/models/brainchop" --model $m 2>&1 | tail -2
done

if [ -n "${REHEARSE:-}" ]; then
    TESTS="tests/pipelines/test_brainchop_import.py"
    BENCH=(--pipeline brainchop-gwm-light --slices 120 --device cpu --case-timeout 120)
    TRAIN=(--smoke)
else
    TESTS="tests/pipelines/test_brainchop_import.py tests/pipelines/test_brainchop_mr.py"
    BENCH=(--pipeline brainchop-gwm-light --pipeline brainchop-mindgrab
           --bundle "$DATA/monai-bundles/spleen_ct_segmentation"
           --slices 300 --device cuda --device cpu --case-timeout 60)
    TRAIN=(--steps 3000)
fi
# e.g. BENCH_ARGS="--bundle DIR --slices 300 --device cuda" to re-run a part
[ -n "${BENCH_ARGS:-}" ] && eval "BENCH=($BENCH_ARGS)"

if [[ " $STAGES " == *" tests "* ]]; then
    stage "pytest (brainchop) on $(left) s left"
    timeout 150 $PY -m pytest -v -s -rA -p no:cacheprovider $TESTS >"$OUT/pytest_brainchop.txt" 2>&1
    echo "pytest rc=$?" | tee -a "$OUT/summary.txt"
    grep -E "PASSED|FAILED|SKIPPED|ERROR|passed|failed|mindgrab:|brain [0-9]|WM [0-9]" \
        "$OUT/pytest_brainchop.txt" | tail -25
fi

if [[ " $STAGES " == *" bench "* ]]; then
    stage "bench/inference.py on $(left) s left"
    timeout $(( ${BENCH_SECONDS:-9999} < $(left) - 5 ? ${BENCH_SECONDS:-9999} : $(left) - 5 )) $PY bench/inference.py "${BENCH[@]}" --json-out "$OUT/bench.jsonl" \
        >"$OUT/bench.md" 2>/tmp/bench.err
    echo "bench rc=$?" | tee -a "$OUT/summary.txt"
    cat "$OUT/bench.md"
    tail -3 /tmp/bench.err | tee -a "$OUT/summary.txt"
fi

BUDGET=$(($(left) - 75))   # data (~20 s on 16 cores), evaluation and copying after the loop
stage "train lesions with a loop budget of $BUDGET s"
if [[ " $STAGES " == *" train "* ]] && { [ "$BUDGET" -ge 60 ] || [ -n "${REHEARSE:-}" ]; }; then
    W=/tmp/train-lesions
    MEDVISION_TRAIN_WORKERS=$(nproc) MEDVISION_TRAIN_THREADS=$(nproc) \
        timeout $((BUDGET + 60)) $PY /tmp/medvision_cmd.py train lesions-unet "${TRAIN[@]}" \
        --time-budget "$BUDGET" --work-dir $W --out $W/bundle/lung_lesions_ct_unet \
        >"$OUT/train.txt" 2>&1
    echo "train rc=$?" | tee -a "$OUT/summary.txt"
    grep -E "device|time budget|step [0-9]+0?00/|bundle written" "$OUT/train.txt" | tail -12
    if [ -f $W/bundle/lung_lesions_ct_unet/models/model.pt ]; then
        (cd $W/bundle && tar -czf "$OUT/lesion_bundle.tgz" lung_lesions_ct_unet)
        stage "evaluate lesions on $(left) s left"
        timeout $(($(left) > 10 ? $(left) - 5 : 5)) $PY /tmp/medvision_cmd.py evaluate lesions \
            --bundle $W/bundle/lung_lesions_ct_unet --json-out "$OUT/lesion_eval.json" \
            >/tmp/lesion_eval.txt 2>&1
        echo "evaluate rc=$?" | tee -a "$OUT/summary.txt"
        tail -14 /tmp/lesion_eval.txt | tee -a "$OUT/summary.txt"
    elif [ -f $W/checkpoint.pt ]; then
        cp $W/checkpoint.pt "$OUT/lesion_checkpoint.pt"
    fi
fi
stage done
