#!/usr/bin/env bash
# Everything the engine must show on a GPU, in one call of the lent machine (about 5 min,
# at most 570 s):
# the CUDA tests, the training matrix, generation from 1e8 to 1e10 voxels, one-shot memory,
# and tortuosity on the GPU. Each part is bounded by its own timeout, so one slow part cannot
# eat the rest, and its JSON/log goes to $OUT whatever happens to the others.
#
# Here, first:  bash benchmarks/device/fetch_wheels.sh      (pydantic, taufactor, ... -> .whl/)
# Then, with the device tool:  run(command="bash benchmarks/device/gpu_check.sh",
#                                  carry=[".whl"], timeout_s=595)
# Dry run on a CPU (small sizes, same code paths):  DRY_RUN=1 bash benchmarks/device/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
WORK=$(mktemp -d)  # one file per part; collect.py folds them into $OUT
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .whl ] && [ -z "${DRY_RUN:-}" ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
SCRATCH=${SCRATCH:-/tmp/microforge-scratch}
mkdir -p "$SCRATCH"

if [ -n "${DRY_RUN:-}" ]; then
    DEVICE=cpu TRAIN_ARCH="tiny" BATCHES="2" PRECISIONS="fp32 bf16" TRAIN_ITERS="--iterations 5 --warmup 5"
    GEN_BIG="tiny --sizes 64 96" GEN_ONE_SHOT="tiny --sizes 48" GEN_SMALL="tiny --sizes 40"
    STATS="--size 64 --tortuosity-size 16 --repeats 1" TESTS="tests/test_cuda.py"
else
    DEVICE=cuda TRAIN_ARCH="reference paper" BATCHES="8" PRECISIONS="tf32 bf16" TRAIN_ITERS=""
    GEN_BIG="reference --sizes 1000 2155" GEN_ONE_SHOT="reference --sizes 640" GEN_SMALL="reference --sizes 448"
    STATS="--size 256 --tortuosity-size 32 --repeats 1" TESTS="tests/test_cuda.py"
fi

part() {  # part NAME SECONDS COMMAND...: stdout to $WORK/NAME.json, stderr to $WORK/NAME.log
    local name=$1 limit=$2
    shift 2
    local began=$SECONDS
    timeout "$limit" "$@" >"$WORK/$name.json" 2>"$WORK/$name.log"
    local status=$?
    echo "== $name: exit $status after $((SECONDS - began)) s" | tee -a "$WORK/summary.txt"
    tail -n 3 "$WORK/$name.log"
}

{ nvidia-smi 2>/dev/null || echo "no nvidia-smi"; } >"$WORK/nvidia-smi.txt"
part cuda-tests 80 "$PYTHON" -m pytest -q -p no:cacheprovider --noconftest -o addopts="" $TESTS
# shellcheck disable=SC2086  # the option strings are word lists on purpose
part train 100 "$PYTHON" benchmarks/train_speed.py --device $DEVICE --arch $TRAIN_ARCH \
    --batch $BATCHES --precision $PRECISIONS $TRAIN_ITERS
part train-channels-last 100 "$PYTHON" benchmarks/train_speed.py --device $DEVICE \
    --arch $TRAIN_ARCH --batch $BATCHES --precision $PRECISIONS $TRAIN_ITERS --channels-last
part generate-small 30 "$PYTHON" benchmarks/generate_speed.py --device $DEVICE --arch $GEN_SMALL
part generate-one-shot 45 "$PYTHON" benchmarks/generate_speed.py --device $DEVICE \
    --arch $GEN_ONE_SHOT --chunk 0
part generate-big 130 "$PYTHON" benchmarks/generate_speed.py --device $DEVICE --arch $GEN_BIG \
    --out-dir "$SCRATCH"
part generate-bf16 25 "$PYTHON" benchmarks/generate_speed.py --device $DEVICE --arch $GEN_SMALL \
    --precision bf16
part stats 60 "$PYTHON" benchmarks/stats_speed.py $STATS
rm -rf "$SCRATCH"
"$PYTHON" benchmarks/device/collect.py "$WORK" "$OUT"
echo "results.json and logs.txt in $OUT"
