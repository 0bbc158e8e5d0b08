#!/usr/bin/env bash
# One GPU session, for a lent machine with no network (an H200 whose python3 holds a CUDA torch):
# build mmcv's CUDA ops offline, run the CUDA tests, measure, and write the report.
#
#   bash tools/dev/gpu_session.sh build     # first call (STAGE_BUDGET default 420 s)
#   bash tools/dev/gpu_session.sh measure   # second call, machine still held (default 330 s)
#   DRY_RUN=1 bash tools/dev/gpu_session.sh build|measure   # the same steps, tiny, on a CPU
#
# Both stages work through the same queue, in order, each step once per machine (a marker in
# .gpu/ records it done): set-up and mmcv build (in the background), the CUDA tests, the backbone
# benchmark, the demo with --amp, the Mask R-CNN benchmark, a bf16 probe, the benchmark's own
# CUDA tests, then the report from all results so far. A stage starts a step
# only if the step's expected time fits in what is left of STAGE_BUDGET, so a stage ends on
# time and the next one carries on. `build` mostly builds and tests, `measure` mostly measures.
# The set-up runs in its own process session (setsid): when the first call returns during the
# build, the build goes on, and the second call waits for it.
#
# Inputs (git-ignored, carried to the machine): .whl/ holds mmcv-2.1.0.tar.gz and the wheels the
# machine lacks (mmengine, mmdet, pycocotools and their pure-Python dependencies); .whl/build/ a
# setuptools<82 for a python without pkg_resources and CPython 3.12's headers for one without
# Python.h; .ref/FishNet a checkout of the reference.
# Installed and built: .gpu/site (pip --target), .gpu/build/mmcv-2.1.0 (the patched source and
# its ninja objects). Results: .gpu/results, and $OUT (.gpu/out without OUT) gets what this call
# produced, at most 8 files: session.log, setup.log, test_cuda.log, bench_backbone.json,
# bench_detector.json, demo.log, demo_summary.json, benchmark_gpu.md.
set -uo pipefail

STAGE="${1:-}"
case "$STAGE" in
-h | --help)
    echo "usage: [DRY_RUN=1] [STAGE_BUDGET=s] bash tools/dev/gpu_session.sh build|measure"
    sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"
    exit 0
    ;;
build) STAGE_BUDGET="${STAGE_BUDGET:-420}" ;;
measure) STAGE_BUDGET="${STAGE_BUDGET:-330}" ;;
*)
    echo "usage: [DRY_RUN=1] [STAGE_BUDGET=s] bash tools/dev/gpu_session.sh build|measure" >&2
    exit 2
    ;;
esac
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
DRY_RUN="${DRY_RUN:-0}"
GPU_DIR="$ROOT/.gpu"
[[ "$DRY_RUN" == 1 ]] && GPU_DIR="$ROOT/.gpu/dry"  # a rehearsal leaves the real markers alone
RESULTS="$GPU_DIR/results"
OUT="${OUT:-$GPU_DIR/out}"
START=$(date +%s)
mkdir -p "$GPU_DIR" "$RESULTS" "$OUT"
exec > >(tee -a "$OUT/session.log") 2>&1
TEE_PID=$!
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg

if [[ "$DRY_RUN" == 1 ]]; then
    PY="${PYTHON:-$ROOT/.venv/bin/python}"
    export PYTHONPATH="$ROOT" OMP_NUM_THREADS=1
else
    PY="${PYTHON:-python3}"
    export PYTHONPATH="$GPU_DIR/site:$ROOT"
fi

elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( STAGE_BUDGET - $(elapsed) )); }
say() { printf '[%s %4ds] %s\n' "$STAGE" "$(elapsed)" "$*"; }
done_() { [[ -f "$GPU_DIR/done.$1" ]]; }

# run_step NAME EXPECTED FUNCTION ARGS...: FUNCTION once per machine, if EXPECTED seconds fit
# in what is left of the stage; its commands run under T, which kills them at what is left.
# 0 when it ran and succeeded (or had run before).
STEP_LIMIT=0
T() { timeout --kill-after=10 "$STEP_LIMIT" "$@"; }
run_step() {
    local name=$1 want=$2 rc s
    shift 2
    done_ "$name" && { say "$name: done before"; return 0; }
    STEP_LIMIT=$(left)
    if (( STEP_LIMIT < want )); then
        say "LATER $name: needs about ${want}s, ${STEP_LIMIT}s left in this stage"
        return 99
    fi
    say "START $name"
    s=$(date +%s)
    "$@"
    rc=$?
    say "END $name rc=$rc in $(( $(date +%s) - s ))s$([[ $rc == 124 ]] && echo ' (TIMED OUT)')"
    echo "$STAGE $name rc=$rc $(( $(date +%s) - s ))s" >>"$RESULTS/steps.txt"
    # a step that ran out of time may run again in the next stage; any other end is final
    [[ $rc == 124 || $rc == 137 ]] || touch "$GPU_DIR/done.$name"
    return $rc
}

facts() {
    say "facts"
    date -u
    echo "host cores: $(nproc)"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
    "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], sys.executable); print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.is_available())'
    command -v nvcc && nvcc --version | tail -2
    ls -d /usr/local/cuda* /usr/local/cuda/include/cublas_v2.h
    "$PY" -c 'import setuptools, pkg_resources; print("setuptools", setuptools.__version__)' 2>&1 | tail -1
    "$PY" -c 'import ninja, numpy; print("ninja", ninja.__version__, "numpy", numpy.__version__)' 2>&1 | tail -1
    command -v ninja g++ strip patch git
    "$PY" -m pip --version
    df -h "$ROOT" | tail -1
}

# ---------------------------------------------------------------------------------- set-up
start_setup() {
    if [[ -f "$GPU_DIR/setup.pid" ]] && kill -0 "$(cat "$GPU_DIR/setup.pid")" 2>/dev/null; then
        say "set-up running since $(( $(date +%s) - $(cat "$GPU_DIR/setup.start") ))s"
        return
    fi
    [[ -f "$GPU_DIR/setup.rc" ]] && return
    date +%s >"$GPU_DIR/setup.start"
    if [[ "$DRY_RUN" == 1 ]]; then
        # A rehearsal uses the environment as it is: setup_env.sh would reinstall mmfish
        # (editable) from this checkout into it.
        "$PY" -c 'import mmcv.ops, mmdet, mmfish' >"$GPU_DIR/setup.log" 2>&1
        echo $? >"$GPU_DIR/setup.rc"
        say "dry run: set-up skipped, using $PY as it is (rc $(cat "$GPU_DIR/setup.rc"))"
        return
    fi
    if ! "$PY" -c 'import pkg_resources' 2>/dev/null; then
        say "no pkg_resources in $PY: installing .whl/build/setuptools into .gpu/site"
        "$PY" -m pip install -q --no-index --no-deps --target "$GPU_DIR/site" .whl/build/setuptools-*.whl
    fi
    # torch's extension build includes Python.h; an image without the python headers gets
    # those carried in .whl/build (CPython 3.12.1's: the same C API as any 3.12)
    local cpath="${CPATH:-}"
    if ! "$PY" -c 'import os, sys, sysconfig; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
        mkdir -p "$GPU_DIR/pyinclude"
        tar -xzf .whl/build/python3.12-include.tar.gz -C "$GPU_DIR/pyinclude"
        cpath="$GPU_DIR/pyinclude/python3.12${cpath:+:$cpath}"
        say "no Python.h for $PY: using the carried CPython 3.12 headers"
    fi
    local env=(CPATH="$cpath" MMFISH_USE_CURRENT_PYTHON=1 FORCE_CUDA=1 MMFISH_WHEELS="$ROOT/.whl"
        MMCV_SDIST="$ROOT/.whl/mmcv-2.1.0.tar.gz" MMFISH_SITE="$GPU_DIR/site"
        MMCV_BUILD_DIR="$GPU_DIR/build/mmcv-2.1.0" MAX_JOBS="${MAX_JOBS:-16}"
        TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" PYTHON="$(command -v "$PY")")
    say "set-up starts in the background: ${env[*]} bash tools/setup_env.sh"
    local detach=(setsid)  # without setsid the build ends with this call; the next one resumes it
    command -v setsid >/dev/null || { detach=(nohup); say "no setsid: the build stops with this call"; }
    "${detach[@]}" env "${env[@]}" bash -c 'bash tools/setup_env.sh; echo $? >"$0/setup.rc"' "$GPU_DIR" \
        >"$GPU_DIR/setup.log" 2>&1 </dev/null &
    echo $! >"$GPU_DIR/setup.pid"
}

objects() { find "$GPU_DIR/build" -name '*.o' 2>/dev/null | wc -l; }

# wait_setup: until the set-up ends or the stage has only RESERVE seconds left; 0 if it ended well
wait_setup() {
    local reserve=$1 rc
    while [[ ! -f "$GPU_DIR/setup.rc" ]] && (( $(left) > reserve )); do
        sleep 5
        (( $(elapsed) % 30 < 5 )) && say "set-up: $(objects) objects compiled; $(tail -n 1 "$GPU_DIR/setup.log" | cut -c 1-150)"
    done
    cp "$GPU_DIR/setup.log" "$OUT/setup.log" 2>/dev/null
    if [[ ! -f "$GPU_DIR/setup.rc" ]]; then
        say "set-up still running ($(objects) objects): it goes on; the next stage waits for it"
        return 2
    fi
    rc=$(cat "$GPU_DIR/setup.rc")
    if [[ ! -f "$GPU_DIR/setup.reported" ]]; then
        touch "$GPU_DIR/setup.reported"
        say "set-up ended rc=$rc, $(( $(stat -c %Y "$GPU_DIR/setup.rc") - $(cat "$GPU_DIR/setup.start") ))s after it started; $(grep -h 'mmcv build took' "$GPU_DIR/setup.log")"
        echo "$STAGE setup rc=$rc $(( $(stat -c %Y "$GPU_DIR/setup.rc") - $(cat "$GPU_DIR/setup.start") ))s; $(grep -h 'mmcv build took' "$GPU_DIR/setup.log")" >>"$RESULTS/steps.txt"
        if [[ "$rc" != 0 ]]; then
            say "set-up FAILED; the errors:"
            grep -n -E 'error|FAILED' "$GPU_DIR/setup.log" | head -40
            tail -30 "$GPU_DIR/setup.log"
        fi
    fi
    return "$rc"
}

# ----------------------------------------------------------------------------------- steps
cuda_tests() {  # cuda_tests PYTEST_K: the CUDA tests selected by -k, appended to test_cuda.log
    echo "==== pytest tests/test_cuda.py -k '$1'" >>"$RESULTS/test_cuda.log"
    # -rfEs --tb=short: every failure's message in the log; faulthandler: the stacks of a hang
    # (a timeout left no message in the first GPU session); junit: one record per test
    T "$PY" -m pytest tests/test_cuda.py -k "$1" -q -rfEs --tb=short -p no:cacheprovider \
        -o faulthandler_timeout=240 --junitxml="$RESULTS/test_cuda_junit.xml" \
        >>"$RESULTS/test_cuda.log" 2>&1
    local rc=$?
    cp "$RESULTS/test_cuda.log" "$RESULTS/test_cuda_junit.xml" "$OUT/" 2>/dev/null
    tail -25 "$RESULTS/test_cuda.log"
    return $rc
}

# Not a test: does mmengine's whole-model bf16 autocast (AmpOptimWrapper(dtype='bfloat16'))
# train Mask R-CNN with mmcv 2.1.0's CUDA ops? (mmfish's bf16 route autocasts backbone and neck.)
bf16_probe() {
    T "$PY" - <<'PYEOF'
import sys
import torch
sys.path.insert(0, 'tests')
if not torch.cuda.is_available():
    sys.exit(print('bf16 probe: no GPU'))
import test_cuda as t
from mmengine.optim import AmpOptimWrapper
model = t.mask_rcnn()
wrapper = AmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.01), dtype='bfloat16')
try:
    print('bf16 probe: whole-model bf16 autocast trains:', t.train_steps(model, wrapper, steps=1))
except Exception as e:  # noqa: BLE001
    print(f'bf16 probe: whole-model bf16 autocast fails: {type(e).__name__}: {str(e)[:400]}')
PYEOF
}

bench() {  # bench NAME ARGS...
    local name=$1
    shift
    T "$PY" tools/analysis_tools/benchmark_backbone.py "$@" --out-json "$RESULTS/$name.json" \
        >"$RESULTS/$name.log" 2>&1
    local rc=$?
    cp "$RESULTS/$name.json" "$OUT/" 2>/dev/null
    grep -v 'repetition' "$RESULTS/$name.log" | tail -70
    return $rc
}

demo() {
    rm -rf "$GPU_DIR/demo"
    T "$PY" tools/demo.py "$@" --work-dir "$GPU_DIR/demo" >"$RESULTS/demo_full.log" 2>&1
    local rc=$?
    cp "$GPU_DIR/demo/demo_summary.json" "$RESULTS/" 2>/dev/null
    grep -E 'Epoch\(|mAP_copypaste|Traceback|[a-zA-Z]Error: |demo summary' "$RESULTS/demo_full.log" \
        >"$RESULTS/demo.log"
    cp "$RESULTS/demo.log" "$RESULTS/demo_summary.json" "$OUT/" 2>/dev/null
    tail -40 "$RESULTS/demo_full.log"
    return $rc
}

report() {
    "$PY" tools/dev/gpu_report.py --dir "$RESULTS" --setup-log "$GPU_DIR/setup.log" \
        --out "$RESULTS/benchmark_gpu.md" >/dev/null && cp "$RESULTS/benchmark_gpu.md" "$OUT/"
}

# ---------------------------------------------------------------------------------- queue
# Expected seconds on the H200 (estimates; a step starts only if they fit in what is left).
BACKBONE=(--shapes 224x224:64 800x1216:2 --warmup 2 --repeat 6 --threads 4 --no-flops
    --precision fp32 bf16 fp16
    --models fishnet99 fishnet150 fishnet201 resnet50 resnet101 fishnet150+cp fishnet150+cps)
DETECTOR=(--detector --shapes 800x1216:2 --warmup 1 --repeat 5 --threads 4
    --precision fp32 bf16 fp16 --models fishnet99 fishnet150 fishnet150+cp fishnet150+cps resnet50)
DEMO=(--amp)
T_TESTS=${T_TESTS:-70} T_BACKBONE=${T_BACKBONE:-100} T_DEMO=${T_DEMO:-120}
T_DETECTOR=${T_DETECTOR:-60} T_PROBE=${T_PROBE:-30} T_TESTS_BENCH=${T_TESTS_BENCH:-60}
if [[ "$DRY_RUN" == 1 ]]; then
    BACKBONE=(--shapes 64x64:2 --warmup 0 --repeat 1 --threads 1 --no-memory --no-flops
        --precision fp32 bf16 --models fishnet99 resnet50 fishnet99+cp fishnet99+cps)
    DETECTOR=(--detector --shapes 64x96:1 --warmup 0 --repeat 1 --threads 1 --no-memory
        --precision fp32 bf16 --models fishnet99 resnet50)
    DEMO=(--amp --cfg-options train_cfg.max_epochs=1 train_cfg.val_interval=1
        train_dataloader.dataset.indices=8 val_dataloader.dataset.indices=4)
    T_TESTS=120 T_PROBE=10 T_BACKBONE=200 T_DETECTOR=200 T_DEMO=300 T_TESTS_BENCH=10
fi
if [[ -d .ref/FishNet/models ]]; then
    BACKBONE+=(--reference-root .ref/FishNet)
else
    say "no .ref/FishNet: the benchmark leaves the reference out"
fi

say "budget ${STAGE_BUDGET}s; python $PY; PYTHONPATH=$PYTHONPATH"
[[ -f "$GPU_DIR/facts.done" ]] || { facts; touch "$GPU_DIR/facts.done"; }
start_setup
# Wait for the set-up while at least the tests would still fit after it.
if wait_setup "$T_TESTS"; then
    # In order of importance; a step that does not fit now is left for the next stage, and a
    # later, shorter one may use the time. The benchmark's own CUDA tests come last: the
    # measuring steps run the same code at full size.
    run_step cuda-tests "$T_TESTS" cuda_tests 'not benchmark'
    run_step bench-backbone "$T_BACKBONE" bench bench_backbone "${BACKBONE[@]}"
    run_step demo "$T_DEMO" demo "${DEMO[@]}"
    run_step bench-detector "$T_DETECTOR" bench bench_detector "${DETECTOR[@]}"
    run_step bf16-probe "$T_PROBE" bf16_probe
    run_step cuda-tests-bench "$T_TESTS_BENCH" cuda_tests benchmark
else
    say "no usable set-up yet: nothing else ran"
fi
ls "$RESULTS"/*.json >/dev/null 2>&1 && report
say "stage done; steps so far:"
cat "$RESULTS/steps.txt" 2>/dev/null
say "files in \$OUT: $(ls "$OUT" | tr '\n' ' ')"
exec >&- 2>&-  # let tee write the end of session.log (not waiting for the set-up)
wait "$TEE_PID"
