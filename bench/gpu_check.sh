#!/usr/bin/env bash
# bench/gpu_check.sh: one-shot verification of fastgd's GPU backends (numba-cuda, CuPy) on a
# real GPU (an H100 or H200, CUDA 13; python3 with numba, numba-cuda, cupy-cuda13x, torch and
# pytest-benchmark; no network), within about 7.5 minutes.
#
# HOW TO RUN IT with the device tool, in one call (the machine's start and a possible rerun
# fit the rest of the 15 minutes of device time):
#
#     run(command="OUT=$OUT bash bench/gpu_check.sh", timeout_s=560)
#
# The reply's output_tail ends with the summary; the files come back under files_at (logs,
# JUnit XML, extras.json, env.json, bench-smoke.json, summary.md). Commit summary.md as
# bench/results/gpu-<date>.md. Anywhere else: `OUT=/tmp/gpu-check bash bench/gpu_check.sh`
# (without a GPU every GPU stage is skipped with its reason, in well under a minute).
#
# Stages, each under `timeout` (SIGINT first, so pytest still writes its JUnit XML; SIGKILL
# 15 s later), all under one deadline (GPU_CHECK_BUDGET seconds, default 450):
#   setup         fastgd importable from this checkout: already, or pip install -e . --no-deps
#                 --no-build-isolation, or a path shim (sitecustomize mapping fastgd.kernels
#                 to kernels/, as pyproject does)
#   gpu           nvidia-smi
#   env           versions, fastgd.backends.describe(), device properties (env.json) and
#                 what can run (flags.env)
#   -- in parallel (compile-bound on the CPUs, light on the GPU), ending RESERVE s before the
#      deadline so the extras keep their time:
#   cupy-tests    tests/test_cupy_backend.py, its GPU classes (-k OnGpu)
#   numba-tests   tests/cudasim/test_numba_cuda.py and test_device_read.py on the device:
#                 simulator off and tests/cudasim/conftest.py (which turns it on) not loaded;
#                 deselected: test_registry_under_the_simulator (asserts the simulator)
#   torch-graph   tests/test_torch_cuda_graph.py (the PyTorch CUDA-graph peer)
#   cuda-compile  tests/test_cuda_compile.py -k "numba-cuda and float32" (ptxas figures)
#   bench-smoke   bench/test_gpu.py at quick size (a smoke test: it runs beside the tests)
#   -- alone on the device:
#   extras        bench/gpu_extras.py extras: figures, A/B toggles, memory, OOM, agreement,
#                 the torch peer (see that file's docstring), rows in extras.json
#   summary       bench/gpu_extras.py summary: printed last and written to summary.md
#
# Knobs: PYTHON (default python3), OUT (default a new folder under /tmp), GPU_CHECK_BUDGET
# (seconds, default 450), GPU_CHECK_SKIP (stage names, comma-separated), GPU_CHECK_EXTRAS
# (which extras, comma-separated), GPU_CHECK_SCALE (extras' data sizes, default 1),
# GPU_CHECK_WORK (caches and scratch, default a new folder under /tmp, removed at the end),
# GPU_CHECK_RESERVE (seconds the parallel phase leaves for the extras, default 170),
# GPU_CHECK_FLAGS (a test hook, see below).
set -u -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$REPO" || exit 2
PY=${PYTHON:-python3}
OUT=${OUT:-${TMPDIR:-/tmp}/fastgd-gpu-check-$(date +%Y%m%d-%H%M%S)}
BUDGET=${GPU_CHECK_BUDGET:-450}
SKIP=",${GPU_CHECK_SKIP:-},"
RESERVE=${GPU_CHECK_RESERVE:-170} # seconds the parallel phase leaves for the extras
MIN_STAGE=15                      # a stage with less time than this is skipped
mkdir -p "$OUT/stages" || exit 2
OUT=$(cd "$OUT" && pwd -P)
WORK=${GPU_CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/fastgd-gpu-work.XXXXXX")}
mkdir -p "$WORK"
T0=$(date +%s)
DEADLINE=$((T0 + BUDGET))
SEQ=0
ROW=
PIDS=()

if [ ! -f pyproject.toml ] || [ ! -d kernels/cu ] || [ ! -f bench/gpu_extras.py ]; then
    echo "bench/gpu_check.sh: not in the fastgd repository ($REPO)" >&2
    exit 2
fi

# Caches outside $OUT (they need not come back) and outside the repository; no bytecode in it.
export PYTHONDONTWRITEBYTECODE=1 PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export CUPY_CACHE_DIR="$WORK/cupy-cache" NUMBA_CACHE_DIR="$WORK/numba-cache"
export FASTGD_REPO="$REPO" OUT PY GPU_CHECK_BUDGET="$BUDGET"
GPU_CHECK_GIT=$(git rev-parse --short HEAD 2>/dev/null || echo "not a git checkout")
if [ "$GPU_CHECK_GIT" != "not a git checkout" ] && [ -n "$(git status --porcelain 2>/dev/null)" ]; then
    GPU_CHECK_GIT="$GPU_CHECK_GIT+changes"
fi
export GPU_CHECK_GIT
unset NUMBA_ENABLE_CUDASIM FASTGD_ALLOW_CUDASIM

# stage_time CAP RESERVE: the seconds a stage starting now may run (its cap, within the
# deadline less RESERVE).
stage_time() {
    local left=$((DEADLINE - $(date +%s) - $2 - 5))
    echo $(($1 < left ? $1 : left))
}

# next_row NAME: ROW, the file of the next stage's row (numbered in start order, so the
# rows sort by it; a variable, not output: SEQ must count in this shell, not a subshell).
next_row() {
    SEQ=$((SEQ + 1))
    printf -v ROW '%s/stages/%02d-%s.tsv' "$OUT" "$SEQ" "$1"
}

# skip_stage NAME REASON: a row saying why the stage did not run.
skip_stage() {
    next_row "$1"
    printf '%s\tskipped\t0\t%s\n' "$1" "$2" >"$ROW"
    echo "== $1: skipped ($2)"
}

# _stage ROW NAME SECONDS COMMAND...: run COMMAND under timeout, output in $OUT/NAME.log,
# its row (name, status, seconds) in ROW.
_stage() {
    local row=$1 name=$2 t=$3
    shift 3
    local s rc st
    s=$(date +%s)
    timeout -k 15 -s INT "$t" "$@" >"$OUT/$name.log" 2>&1 </dev/null
    rc=$?
    case $rc in
        0) st=ok ;;
        124 | 137) st=TIMEOUT ;;
        1) st=FAILURES ;;
        5) st="no tests" ;;
        *) st="rc=$rc" ;;
    esac
    printf '%s\t%s\t%s\t\n' "$name" "$st" "$(($(date +%s) - s))" >"$row"
    echo "== $name: $st after $(($(date +%s) - s))s"
    tail -n 2 "$OUT/$name.log" | cut -c1-150 | sed 's/^/   | /'
}

# run_stage NAME CAP RESERVE COMMAND...: a stage now, in the foreground.
# start_stage NAME CAP RESERVE COMMAND...: the same in the background (wait_stages).
run_stage() { _launch fg "$@"; }
start_stage() { _launch bg "$@"; }
_launch() {
    local how=$1 name=$2 cap=$3 reserve=$4
    shift 4
    if [[ $SKIP == *",$name,"* ]]; then
        skip_stage "$name" "GPU_CHECK_SKIP"
        return 0
    fi
    local t
    t=$(stage_time "$cap" "$reserve")
    if ((t < MIN_STAGE)); then
        skip_stage "$name" "out of time (budget ${BUDGET}s)"
        return 0
    fi
    next_row "$name"
    echo "== $name: started (limit ${t}s)"
    if [ "$how" = bg ]; then
        _stage "$ROW" "$name" "$t" "$@" &
        PIDS+=($!)
    else
        _stage "$ROW" "$name" "$t" "$@"
    fi
}

wait_stages() {
    local pid
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do
        wait "$pid"
    done
    PIDS=()
}

# ------------------------------------------------------------------------------ setup
cat >"$WORK/setup.sh" <<'EOF'
# fastgd importable from this checkout: already, by an editable install, or by a path shim.
set -u
mine() { # does $PY import fastgd and its kernels from this repository?
    (cd "$WORK" && "$PY" - <<'PYEOF'
import os, sys
repo = os.environ["FASTGD_REPO"]
import fastgd, fastgd.kernels.cupy_module, fastgd.kernels.cuda, fastgd.kernels.device_tables
here = os.path.realpath(fastgd.__file__)
print("fastgd from", here)
sys.exit(0 if here.startswith(os.path.join(repo, "fastgd", "")) else 1)
PYEOF
    )
}
echo "python: $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
if mine; then
    echo "MODE=present" | tee "$OUT/mode.env"; exit 0
fi
if "$PY" -m pip install -e . --no-deps --no-build-isolation && mine; then
    echo "MODE=installed" | tee "$OUT/mode.env"; exit 0
fi
echo "--- editable install failed; falling back to a path shim in $WORK/shim"
# fastgd/ imports from the repository root; a meta-path finder (sitecustomize, which then runs
# any sitecustomize it shadows) maps the package fastgd.kernels to kernels/, as pyproject does.
rm -rf "$WORK/shim"; mkdir -p "$WORK/shim"
cat >"$WORK/shim/sitecustomize.py" <<PYEOF
import importlib.abc, importlib.util, os, sys
_KERNELS = os.path.join("$FASTGD_REPO", "kernels")


class _FastgdKernels(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "fastgd.kernels":
            return None  # its submodules are found through its __path__
        return importlib.util.spec_from_file_location(
            name, os.path.join(_KERNELS, "__init__.py"), submodule_search_locations=[_KERNELS])


sys.meta_path.insert(0, _FastgdKernels())
_here = os.path.dirname(os.path.abspath(__file__))
for _d in sys.path:
    _f = os.path.join(_d or ".", "sitecustomize.py")
    if os.path.abspath(_d or ".") != _here and os.path.isfile(_f):
        exec(compile(open(_f, encoding="utf-8").read(), _f, "exec"), {"__name__": "_shadowed"})
        break
PYEOF
export PYTHONPATH="$WORK/shim:$FASTGD_REPO${PYTHONPATH:+:$PYTHONPATH}"
if mine; then
    printf 'MODE=shim\nexport PYTHONPATH=%q\n' "$PYTHONPATH" | tee "$OUT/mode.env"; exit 0
fi
echo "MODE=broken" | tee "$OUT/mode.env"; exit 1
EOF
export WORK
run_stage setup 90 0 bash "$WORK/setup.sh"
MODE=broken
# shellcheck disable=SC1091
[ -f "$OUT/mode.env" ] && . "$OUT/mode.env"
echo "   fastgd: $MODE"
# The pytest plugin (the fastgd_benchmark fixture) is an entry point only when installed.
PLUGIN=()
if ! "$PY" -c 'import importlib.metadata as m, sys; sys.exit(0 if any(e.value.startswith("fastgd") for e in m.entry_points(group="pytest11")) else 1)' 2>/dev/null; then
    PLUGIN=(-p fastgd.pytest_plugin)
fi

# ------------------------------------------------------------------------------ gpu, env
if command -v nvidia-smi >/dev/null; then
    run_stage gpu 20 0 bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.sm,clocks.max.memory --format=csv,noheader; nvidia-smi'
else
    skip_stage gpu "nvidia-smi not found"
fi
NUMBA_CUDA_OK=0 CUPY_OK=0 TORCH_CUDA_OK=0
NUMBA_CUDA_WHY="env stage did not run" CUPY_WHY="env stage did not run" TORCH_WHY="env stage did not run"
run_stage env 60 0 "$PY" bench/gpu_extras.py env --out "$OUT"
# shellcheck disable=SC1091
[ -f "$OUT/flags.env" ] && . "$OUT/flags.env"
# A test hook: a file sourced after flags.env (e.g. forcing NUMBA_CUDA_OK=1 with the CUDA
# simulator exported, to try the stages' machinery on a machine without a GPU).
# shellcheck disable=SC1090
[ -n "${GPU_CHECK_FLAGS:-}" ] && . "$GPU_CHECK_FLAGS"
echo "   usable: numba-cuda=$NUMBA_CUDA_OK cupy=$CUPY_OK torch-cuda=$TORCH_CUDA_OK"

# ------------------------------------------------------------------------------ tests (parallel)
PYTEST=("$PY" -m pytest -p no:cacheprovider -q -rfEs)
if [ "$CUPY_OK" = 1 ]; then
    start_stage cupy-tests 300 "$RESERVE" "${PYTEST[@]}" tests/test_cupy_backend.py -k OnGpu \
        --junitxml="$OUT/cupy-tests.xml"
else
    skip_stage cupy-tests "cupy backend unusable: $CUPY_WHY"
fi
if [ "$NUMBA_CUDA_OK" = 1 ]; then
    # In place, without tests/cudasim/conftest.py (it switches the simulator on) and without
    # the project's addopts (they ignore tests/cudasim); tests/ on the path for its helpers.
    start_stage numba-tests 300 "$RESERVE" env PYTHONPATH="$REPO/tests${PYTHONPATH:+:$PYTHONPATH}" \
        "${PYTEST[@]}" --noconftest -o addopts= \
        tests/cudasim/test_numba_cuda.py tests/cudasim/test_device_read.py \
        -k "not test_registry_under_the_simulator" \
        --junitxml="$OUT/numba-tests.xml"
else
    skip_stage numba-tests "numba-cuda unusable: $NUMBA_CUDA_WHY"
fi
if [ "$TORCH_CUDA_OK" = 1 ]; then
    start_stage torch-graph 120 "$RESERVE" "${PYTEST[@]}" tests/test_torch_cuda_graph.py \
        --junitxml="$OUT/torch-graph.xml"
else
    skip_stage torch-graph "$TORCH_WHY"
fi
if [ "$NUMBA_CUDA_OK" = 1 ] || [ "$CUPY_OK" = 1 ]; then
    start_stage cuda-compile 240 "$RESERVE" "${PYTEST[@]}" tests/test_cuda_compile.py \
        -k "numba-cuda and float32" --junitxml="$OUT/cuda-compile.xml"
else
    skip_stage cuda-compile "no usable GPU backend (the CPU test suite runs this test)"
fi
# (without a usable GPU backend the module skips itself and says why)
start_stage bench-smoke 240 "$RESERVE" env FASTGD_BENCH_QUICK=1 "${PYTEST[@]}" bench/test_gpu.py \
    ${PLUGIN[@]+"${PLUGIN[@]}"} --benchmark-json="$OUT/bench-smoke.json" \
    --benchmark-columns=min,mean,rounds --junitxml="$OUT/bench-smoke.xml"
wait_stages

# ------------------------------------------------------------------------------ extras (alone)
# An empty CuPy kernel cache of their own: the first run of a model compiles cold.
run_stage extras 240 10 env CUPY_CACHE_DIR="$WORK/cupy-cache-extras" \
    "$PY" bench/gpu_extras.py extras --out "$OUT"

# ------------------------------------------------------------------------------ summary
export GPU_CHECK_BUDGET_LINE="$(($(date +%s) - T0)) s of the ${BUDGET} s budget; fastgd: $MODE"
echo "== summary"
if ! "$PY" bench/gpu_extras.py summary --out "$OUT" 2>"$OUT/summary.err"; then
    echo "(the summary script failed: $OUT/summary.err)"
    cat "$OUT"/stages/*.tsv 2>/dev/null | column -t -s $'\t'
fi
[ -z "${GPU_CHECK_WORK:-}" ] && rm -rf "$WORK"
exit 0
