#!/usr/bin/env bash
# Everything the engine must show on a GPU, in one call of the lent machine (at most 590 s):
# 1. speed, alone on the GPU (at most SPEED_BUDGET = 190 s; parts in order of importance, and
#    those the budget does not reach are skipped): the CUDA tests, the training matrix,
#    one-shot memory, generation up to 1e10 voxels, channels-last training (reference net),
#    small and bf16 generation, statistics with tortuosity;
# 2. fidelity (at most 375 s): benchmarks/fidelity.py on the real NMC electrode (128^3; the
#    62^3 SOFC anode is smaller than these nets' 64-pixel crops), trained on its middle slice
#    for 300 s with the paper and the reference presets, both at once (so each has about half
#    the GPU; the records say how many iterations each ran).
# ONLY="part ..." runs the named parts alone (fidelity is one part), e.g. what a short lease
# did not reach last time. FIDELITY_RUNS="NAME=ARCH[@CONFIG.json] ..." sets the fidelity runs
# (e.g. "paper=paper paper-lr5e-4=paper@benchmarks/device/lr5e-4.json"), FIDELITY_SECONDS
# their training time (300; the stage's limit follows).
# Each part is bounded by its own timeout and by its stage's budget, so one slow part cannot
# eat the rest, and its JSON/log reaches $OUT whatever happens to the others.
#
# Here, first:  bash benchmarks/device/prepare.sh      (.whl/: pydantic, taufactor, ...;
#                                                       .truth/: the real volumes)
# Then, with the device tool:  run(command="bash benchmarks/device/gpu_check.sh",
#                                  carry=[".whl", ".truth"], timeout_s=598)
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
    DEVICE=cpu TRAIN_ARCH="tiny" CHANNELS_LAST_ARCH="tiny" BATCHES="2" PRECISIONS="fp32 bf16" TRAIN_ITERS="--iterations 5 --warmup 5"
    GEN_BIG="tiny --sizes 64 96" GEN_ONE_SHOT="tiny --sizes 48" GEN_SMALL="tiny --sizes 40"
    STATS="--size 64 --tortuosity-size 16 --repeats 1" TESTS="tests/test_cuda.py"
    # tiny on the small SOFC anode: the real presets take minutes per iteration here, and
    # tortuosity of 128^3 volumes minutes more (the real presets need 64+ voxels a side)
    FIDELITY_RUNS=${FIDELITY_RUNS:-"tiny=tiny"} FIDELITY_TRUTH=sofc_anode_3phase_62.tif
    FIDELITY_BUDGET="--iterations 4 --mark-iterations 2 --seeds 1"
else
    DEVICE=cuda TRAIN_ARCH="reference paper" CHANNELS_LAST_ARCH="reference" BATCHES="8" PRECISIONS="tf32 bf16" TRAIN_ITERS=""
    GEN_BIG="reference --sizes 1000 2155" GEN_ONE_SHOT="reference --sizes 640" GEN_SMALL="reference --sizes 448"
    STATS="--size 256 --tortuosity-size 32 --repeats 1" TESTS="tests/test_cuda.py"
    FIDELITY_RUNS=${FIDELITY_RUNS:-"paper=paper reference=reference"} FIDELITY_TRUTH=nmc_binary_128.tif
    FIDELITY_SECONDS=${FIDELITY_SECONDS:-300}
    FIDELITY_BUDGET="--seconds $FIDELITY_SECONDS --mark-seconds $((FIDELITY_SECONDS / 2)) --seeds 2"
fi
TRUTH=${TRUTH:-.truth/$FIDELITY_TRUTH}  # prepare.sh copies it there; here, also:
[ -f "$TRUTH" ] || TRUTH=../shared/data/volumes/$FIDELITY_TRUTH
ONLY=${ONLY:-}
SPEED_BUDGET=${SPEED_BUDGET:-190} FIDELITY_LIMIT=${FIDELITY_LIMIT:-$((${FIDELITY_SECONDS:-300} + 75))}

wanted() {  # wanted NAME: whether ONLY is empty or names it
    [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]
}

part() {  # part NAME SECONDS COMMAND...: stdout to $WORK/NAME.json, stderr to $WORK/NAME.log
    local name=$1 limit=$2
    shift 2
    wanted "$name" || return 0
    local left=$((SPEED_BUDGET - SECONDS))
    if [ "$left" -lt 10 ]; then
        echo "== $name: skipped, the speed stage's $SPEED_BUDGET s are spent" | tee -a "$WORK/summary.txt"
        return
    fi
    [ "$left" -lt "$limit" ] && limit=$left
    local began=$SECONDS
    timeout "$limit" "$@" >"$WORK/$name.json" 2>"$WORK/$name.log"
    local status=$?
    echo "== $name: exit $status after $((SECONDS - began)) s (limit $limit s)" | tee -a "$WORK/summary.txt"
    tail -n 3 "$WORK/$name.log"
}

{ nvidia-smi 2>/dev/null || echo "no nvidia-smi"; } >"$WORK/nvidia-smi.txt"
SECONDS=0  # the speed stage's budget counts from here, after the wheels' install
part cuda-tests 80 "$PYTHON" -m pytest -q -p no:cacheprovider --noconftest -o addopts="" $TESTS
# shellcheck disable=SC2086  # the option strings are word lists on purpose
part train 100 "$PYTHON" benchmarks/train_speed.py --device $DEVICE --arch $TRAIN_ARCH \
    --batch $BATCHES --precision $PRECISIONS $TRAIN_ITERS
part generate-one-shot 45 "$PYTHON" benchmarks/generate_speed.py --device $DEVICE \
    --arch $GEN_ONE_SHOT --chunk 0
part generate-big 130 "$PYTHON" benchmarks/generate_speed.py --device $DEVICE --arch $GEN_BIG \
    --out-dir "$SCRATCH"
part train-channels-last 120 "$PYTHON" benchmarks/train_speed.py --device $DEVICE \
    --arch $CHANNELS_LAST_ARCH --batch $BATCHES --precision $PRECISIONS $TRAIN_ITERS --channels-last
part generate-small 30 "$PYTHON" benchmarks/generate_speed.py --device $DEVICE --arch $GEN_SMALL
part generate-bf16 25 "$PYTHON" benchmarks/generate_speed.py --device $DEVICE --arch $GEN_SMALL \
    --precision bf16
part stats 60 "$PYTHON" benchmarks/stats_speed.py $STATS
rm -rf "$SCRATCH"

# Fidelity: the runs share the GPU and the CPU cores; each gets its own folder and timeout.
if wanted fidelity; then
    began=$SECONDS
    runs=($FIDELITY_RUNS)
    threads=$(( $(nproc) / ${#runs[@]} > 1 ? $(nproc) / ${#runs[@]} : 1 ))
    for run in "${runs[@]}"; do
        name=${run%%=*} spec=${run#*=}
        config=()
        [[ $spec == *@* ]] && config=(--config "@${spec#*@}")
        # shellcheck disable=SC2086
        timeout "$FIDELITY_LIMIT" "$PYTHON" benchmarks/fidelity.py --truth "$TRUTH" \
            --arch "${spec%%@*}" "${config[@]}" $FIDELITY_BUDGET --seed 1 --tortuosity final \
            --device $DEVICE --threads "$threads" --label "gpu_check $run" \
            --out "$WORK/fidelity-$name" >"$WORK/fidelity-$name.jsonl" 2>"$WORK/fidelity-$name.log" &
    done
    wait
    echo "== fidelity ($FIDELITY_RUNS): done after $((SECONDS - began)) s (limit $FIDELITY_LIMIT s)" \
        | tee -a "$WORK/summary.txt"
    for run in "${runs[@]}"; do
        name=${run%%=*}
        tail -n 3 "$WORK/fidelity-$name.log"
        [ -f "$WORK/fidelity-$name/slices.png" ] && cp "$WORK/fidelity-$name/slices.png" "$OUT/fidelity-$name.png"
    done
fi
"$PYTHON" benchmarks/device/collect.py "$WORK" "$OUT"
echo "results.json and logs.txt in $OUT"
