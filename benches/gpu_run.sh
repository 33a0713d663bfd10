#!/usr/bin/env bash
# One call on a GPU machine: build with CUDA, run the GPU tests, compute-sanitizer, the benchmark.
#
#   bash benches/gpu_run.sh            # all stages: build test sanitize bench
#   bash benches/gpu_run.sh build test # only these stages (in this order); each stage is also a word below
#   STAGES: build | test | sanitize | bench
#   env: PYTHON (default: python3, or .venv/bin/python when it is a CUDA torch), BENCH_ARGS (extra args for
#        `gpu_suite.py bench`, e.g. "--models conv_small,hybrid_medium --triton"), TEST_ARGS (extra pytest args),
#        OUT (logs and the JSON are copied there too).
# Logs: benches/results/logs/<stage>.log (and $OUT/). Exit status: non-zero when any stage failed (every
# requested stage still runs, so one call gives the whole picture).
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
LOGDIR=$ROOT/benches/results/logs
mkdir -p "$LOGDIR"
[ -n "${OUT:-}" ] && mkdir -p "$OUT"
STAGES=${*:-build test sanitize bench}

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  PY=python3
  if [ -x .venv/bin/python ] && .venv/bin/python -c 'import torch,sys; sys.exit(torch.version.cuda is None)' 2>/dev/null; then
    PY=.venv/bin/python
  fi
fi
export PYTHONPATH="$ROOT:$ROOT/python${PYTHONPATH:+:$PYTHONPATH}"

# nvcc / CUDA_HOME (torch's build looks at CUDA_HOME first)
if [ -z "${CUDA_HOME:-}" ]; then
  for d in /usr/local/cuda /usr/local/cuda-*; do [ -x "$d/bin/nvcc" ] && export CUDA_HOME=$d && break; done
fi
[ -n "${CUDA_HOME:-}" ] && export PATH="$CUDA_HOME/bin:$PATH"
SANITIZER=$(command -v compute-sanitizer || ls "${CUDA_HOME:-/usr/local/cuda}"/bin/compute-sanitizer 2>/dev/null || true)

FAILED=()
run_stage() {  # name, command...
  local name=$1; shift
  local log="$LOGDIR/$name.log"
  echo "=== [$name] $(date -u +%H:%M:%S) $*" | tee "$log"
  local t0=$SECONDS
  "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  echo "=== [$name] rc=$rc in $((SECONDS - t0)) s" | tee -a "$log"
  [ -n "${OUT:-}" ] && cp "$log" "$OUT/"
  [ "$rc" -eq 0 ] || FAILED+=("$name(rc=$rc)")
  return 0
}

info() {
  echo "python: $PY ($($PY --version 2>&1))"
  $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'
  echo "nvcc: $(command -v nvcc || echo missing) $(nvcc --version 2>/dev/null | tail -1)"
  echo "CUDA_HOME=${CUDA_HOME:-unset}; compute-sanitizer: ${SANITIZER:-missing}"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | head -3
  $PY -c 'import triton; print("triton", triton.__version__)' 2>&1 | tail -1
  $PY -m pytest --version 2>&1 | tail -1
}

build() {
  info
  command -v nvcc >/dev/null || { echo "nvcc not found: the CUDA kernels cannot be built (set CUDA_HOME)"; return 1; }
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
  export MAX_JOBS=${MAX_JOBS:-$(nproc)}
  if ! $PY -m pip install -q --no-build-isolation --no-deps --no-index -e . ; then
    echo "pip install -e . failed; building in place instead (python setup.py build_ext --inplace)"
    $PY setup.py build_ext --inplace || return 1
  fi
  $PY - <<'EOF'
import torch, mnv4_kernels
b = mnv4_kernels.backends()["cuda"]
print("cuda backend:", b)
assert b.available and set(b.ops) == {"uib", "mqa"}, "the CUDA kernels were not built or are not registered"
EOF
}

tests() {
  $PY -m pytest -q -m gpu tests/test_cuda.py --maxfail=20 -p no:cacheprovider ${TEST_ARGS:-} \
    --junitxml="$LOGDIR/test_cuda.xml"
  local rc=$?
  [ -n "${OUT:-}" ] && cp "$LOGDIR/test_cuda.xml" "$OUT/" 2>/dev/null
  return $rc
}

sanitize() {
  [ -n "$SANITIZER" ] || { echo "compute-sanitizer not found"; return 1; }
  local rc=0
  "$SANITIZER" --tool memcheck --error-exitcode 99 --leak-check no "$PY" benches/gpu_suite.py workload || rc=1
  "$SANITIZER" --tool racecheck --racecheck-report hazard --error-exitcode 99 "$PY" benches/gpu_suite.py workload --tiny || rc=1
  "$SANITIZER" --tool synccheck --error-exitcode 99 "$PY" benches/gpu_suite.py workload --tiny || rc=1
  return $rc
}

bench() {
  $PY benches/gpu_suite.py bench ${BENCH_ARGS:-}
  local rc=$?
  [ -n "${OUT:-}" ] && cp benches/results/*.json "$OUT/" 2>/dev/null
  return $rc
}

for s in $STAGES; do
  case $s in
    build) run_stage build build ;;
    test) run_stage test tests ;;
    sanitize) run_stage sanitize sanitize ;;
    bench) run_stage bench bench ;;
    *) echo "unknown stage $s (build | test | sanitize | bench)"; FAILED+=("$s(unknown)") ;;
  esac
done

if [ ${#FAILED[@]} -gt 0 ]; then
  echo "FAILED stages: ${FAILED[*]}"
  exit 1
fi
echo "all stages passed: $STAGES"
