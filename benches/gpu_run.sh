#!/usr/bin/env bash
# One budgeted run on a GPU machine: build, correctness, headline benchmark, the GPU tests, compute-sanitizer.
#
#   OUT=DIR bash benches/gpu_run.sh          # DIR: the results folder (default benches/results/gpu-run)
#   MNV4_GPU_DRY_RUN=1 OUT=DIR bash benches/gpu_run.sh   # every stage stubbed: checks this script in seconds
#                                     (MNV4_GPU_DRY_RUN_FAIL=STAGE: that stub fails, to check the failure paths)
#
# Made for the GPU machines' image: python3 (3.12) with torch 2.11+cu130, triton 3.6, pytest, pytest-timeout
# and pytest-xdist; nvcc 13.0; 16 cores. env: PYTHON (default python3), BUDGET_S (default 480: the whole run
# ends within it, well inside a 9-minute command), MAX_JOBS (16), TORCH_CUDA_ARCH_LIST (9.0), TEST_ARGS (extra
# pytest args), PYTEST_TIMEOUT (seconds per test, 120), MNV4_TRITON_ONE_CONFIG (1: one Triton config per
# kernel, no autotuning, for the tests and the benchmark; 0 autotunes), SANITIZE_TRITON (1: memcheck the Triton
# ops too).
#
# Stages, in order of value; each runs only if enough of the budget is left (else it is skipped with the
# reason) and under `timeout` for what is left of it:
#   build         setup.py build_ext --inplace with MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0 (timed); the run stops
#                 here if it fails. torch.compile's caches are warmed beside it (nice 19), Triton's during check
#                 (stopped before e2e).
#   check         gpu_suite.py check: one case per op x dtype x layout x form (+ NaN), fused conv_small and
#                 hybrid_medium against the reference; CUDA and Triton in parallel processes.
#   e2e           gpu_suite.py e2e: Conv-M@224 and Hybrid-M@256 fp16, batch 256 throughput and batch 1 latency
#                 (CUDA graph): fused cuda / triton against eager channels_last and torch.compile; the copy
#                 and GEMM ceilings -> <gpu>.json.
#   tests_cuda    tests/test_cuda.py (pytest, per-test timeout, xdist).
#   tests_triton  tests/test_triton.py and tests/test_gpu_prep.py without the interpreter, in their own process
#                 after the CUDA tests (a Triton compiler crash cannot take the CUDA results with it).
#   sanitize      compute-sanitizer memcheck (PYTORCH_NO_CUDA_MEMORY_CACHING=1, so it sees overruns inside
#                 what would be PyTorch's cached blocks), racecheck over fp32 and the fp16/bf16 tensor-core path,
#                 synccheck; each on gpu_suite.py workload --tiny. Which ran, found errors or could not run on
#                 this host is recorded.
#   layers        gpu_suite.py layers: per-layer Conv-M / Hybrid-M, ours vs the cuDNN op chain -> <gpu>-layers.json.
# Per-test timeout: pytest-timeout (in the image) when importable, else pytest's faulthandler_timeout (a stack
# dump) under the stage's `timeout`. Nothing can be installed there (no network), so nothing else is assumed.
#
# Results folder (at most 8 files, written as the run goes): summary.txt (read this first), status.json,
# check.json, <gpu>.json, <gpu>-layers.json, logs.tar (every stage's log and the JUnit XML; a stage's log is
# logs/<stage>.log while it runs and is packed into logs.tar when it ends). Exit status 0 only if every stage
# that ran passed and none was skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
T0=$SECONDS
BUDGET_S=${BUDGET_S:-480}
DRY=${MNV4_GPU_DRY_RUN:-0}
PY=${PYTHON:-python3}
OUT=${OUT:-$ROOT/benches/results/gpu-run}
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT"/logs/*.log "$OUT/logs.tar" "$OUT/summary.txt" "$OUT/status.json" "$OUT/check.json"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mnv4-gpu-run.XXXXXX")
: > "$WORK/stages.tsv"
export PYTHONPATH="$ROOT:$ROOT/python${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export MNV4_TRITON_ONE_CONFIG=${MNV4_TRITON_ONE_CONFIG:-1}
unset TRITON_INTERPRET
if [ -z "${CUDA_HOME:-}" ]; then
  for d in /usr/local/cuda /usr/local/cuda-*; do [ -x "$d/bin/nvcc" ] && export CUDA_HOME=$d && break; done
fi
[ -n "${CUDA_HOME:-}" ] && export PATH="$CUDA_HOME/bin:$PATH"
FAILED=()

left() { echo $((BUDGET_S - (SECONDS - T0))); }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >>"$WORK/stages.tsv"; }
# A command under what is left of the current stage's time (SIGTERM, then SIGKILL 10 s later). Dry run: say it.
tmo() {
  if [ "$DRY" = 1 ]; then echo "[dry run] timeout $STAGE_LIMIT $*"; return 0; fi
  timeout --kill-after=10 "$STAGE_LIMIT" "$@"
}
# gpu_suite.py under the stage's time; a dry run has it parse its arguments (and write empty stand-ins).
suite() {
  if [ "$DRY" = 1 ]; then "$PY" benches/gpu_suite.py "$@" --dry-run; return; fi
  tmo "$PY" benches/gpu_suite.py "$@"
}
# Packs the finished stages' logs (and WORK files named) into logs.tar, so the folder stays at 8 files or fewer.
pack() {
  (cd "$OUT" && for f in logs/*.log; do [ -e "$f" ] || continue; tar -rf logs.tar "$f" && rm -f "$f"; done)
  local f
  for f in "$@"; do [ -e "$WORK/$f" ] && tar -C "$WORK" -rf "$OUT/logs.tar" "$f"; done
  return 0
}
# stage NAME MIN_S CAP_S FUNCTION: runs FUNCTION if MIN_S of the budget are left, with STAGE_LIMIT = the
# smaller of CAP_S and what is left (less 20 s for the report); output to the terminal and logs/NAME.log.
stage() {
  local name=$1 min=$2 cap=$3 fn=$4 l
  l=$(left)
  if [ "$l" -lt "$min" ]; then
    echo "=== [$name] skipped: $l s of the $BUDGET_S s budget left, it needs $min"
    record "$name" skipped 0 "budget: $l s left, needs $min"
    FAILED+=("$name(skipped)")
    return 2
  fi
  STAGE_LIMIT=$((cap < l - 20 ? cap : l - 20))
  if [ "$DRY" = 1 ] && [ "${MNV4_GPU_DRY_RUN_FAIL:-}" = "$name" ]; then fn=dry_run_failure; fi
  local log="$OUT/logs/$name.log" t=$SECONDS rc
  echo "=== [$name] $(date -u +%T) start, limit $STAGE_LIMIT s, $l s of the budget left" | tee "$log"
  "$fn" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  echo "=== [$name] rc=$rc in $((SECONDS - t)) s" | tee -a "$log"
  record "$name" "$rc" "$((SECONDS - t))" "$( [ "$rc" -ge 124 ] && [ "$rc" -le 137 ] && echo "timeout or killed")"
  [ "$rc" -eq 0 ] || FAILED+=("$name(rc=$rc)")
  pack
  return "$rc"
}
dry_run_failure() { echo "[dry run] this stage fails (MNV4_GPU_DRY_RUN_FAIL)"; return 3; }
finish() {
  STAGE_LIMIT=60
  if [ "$DRY" = 1 ]; then "$PY" benches/gpu_suite.py report --work "$WORK" --out "$OUT"
  else timeout 60 "$PY" benches/gpu_suite.py report --work "$WORK" --out "$OUT"; fi
  pack junit-cuda.xml junit-triton.xml info.txt warm-compile.log warm-ours-triton.log
  rmdir "$OUT/logs" 2>/dev/null
  local n
  n=$(find "$OUT" -mindepth 1 | wc -l)
  echo "results in $OUT ($n entries, $((SECONDS - T0)) s of the $BUDGET_S s budget):"
  ls -la "$OUT"
  [ "$n" -le 8 ] || { echo "more than 8 entries in $OUT"; FAILED+=("results(>8 files)"); }
  rm -rf "$WORK"
  if [ ${#FAILED[@]} -gt 0 ]; then echo "FAILED or skipped: ${FAILED[*]}"; exit 1; fi
  echo "all stages passed"
  exit 0
}

info() {
  echo "date $(date -u +%FT%TZ), host $(hostname), $(nproc) cores, budget $BUDGET_S s, dry run $DRY"
  echo "python $PY: $("$PY" --version 2>&1)"
  echo "nvcc $(command -v nvcc || echo missing): $(nvcc --version 2>/dev/null | tail -1)"
  echo "compute-sanitizer: $(command -v compute-sanitizer || echo missing)"
  if [ "$DRY" != 1 ]; then
    "$PY" -c 'import torch, triton, pytest; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn",
torch.backends.cudnn.version(), "triton", triton.__version__, "pytest", pytest.__version__)' 2>&1
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | head -2
  fi
  echo "MNV4_TRITON_ONE_CONFIG=$MNV4_TRITON_ONE_CONFIG"
}

# ---- stages
WARM_PIDS=()
warm() {  # background: fills torch.compile's / Triton's on-disk caches for e2e (best effort; log in logs.tar)
  local log="$WORK/warm-$1.log"
  if [ "$DRY" = 1 ]; then "$PY" benches/gpu_suite.py warm --impls "$1" --dry-run >"$log" 2>&1; return; fi
  nice -n 19 timeout 300 "$PY" benches/gpu_suite.py warm --impls "$1" >"$log" 2>&1 &
  WARM_PIDS+=($!)
}
stop_warm() {  # nothing compiles beside the timing
  local p
  for p in "${WARM_PIDS[@]}"; do
    kill -0 "$p" 2>/dev/null && { echo "warm-up $p still running: stopped"; kill "$p"; }
    wait "$p" 2>/dev/null
  done
  WARM_PIDS=()
}

build() {
  info | tee "$WORK/info.txt"
  command -v nvcc >/dev/null || [ "$DRY" = 1 ] || { echo "nvcc not found: the CUDA kernels cannot be built"; return 1; }
  local t=$SECONDS
  tmo env MAX_JOBS="${MAX_JOBS:-16}" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" \
    "$PY" setup.py build_ext --inplace || return 1
  echo "build: $((SECONDS - t)) s (MAX_JOBS=${MAX_JOBS:-16}, TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0})"
  tmo "$PY" -c 'import mnv4_kernels
b = mnv4_kernels.backends()["cuda"]
print("cuda backend:", b)
assert b.available and set(b.ops) == {"uib", "mqa"}, "the CUDA kernels were not built or are not registered"'
}

check() {
  local pids=() p rc=0 i
  suite check --backends cuda --what ops,models --json "$WORK/check-cuda.json" & pids+=($!)
  for i in 0 1 2 3; do
    suite check --backends triton --what ops --part "$i/4" --json "$WORK/check-triton-$i.json" & pids+=($!)
  done
  suite check --backends triton --what models --json "$WORK/check-triton-models.json" & pids+=($!)
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return $rc
}

e2e() {
  suite e2e --deadline "$(($(date +%s) + STAGE_LIMIT - 15))" --out "$OUT"
}

pytest_flags() {  # per-test timeout and xdist workers ($1), from what the python has
  if "$PY" -c 'import pytest_timeout' 2>/dev/null; then
    echo "--timeout=${PYTEST_TIMEOUT:-120}"
  else
    echo "-o faulthandler_timeout=${PYTEST_TIMEOUT:-120}"
  fi
  "$PY" -c 'import xdist' 2>/dev/null && echo "-n $1"
}

tests_cuda() {
  # shellcheck disable=SC2046
  tmo "$PY" -m pytest -q -p no:cacheprovider -m gpu $(pytest_flags 4) --junitxml="$WORK/junit-cuda.xml" \
    tests/test_cuda.py ${TEST_ARGS:-}
}

tests_triton() {
  # shellcheck disable=SC2046
  tmo "$PY" -m pytest -q -p no:cacheprovider $(pytest_flags 8) --junitxml="$WORK/junit-triton.xml" \
    tests/test_triton.py tests/test_gpu_prep.py ${TEST_ARGS:-}
}

sanitize() {
  local san each rc=0
  san=$(command -v compute-sanitizer || ls "${CUDA_HOME:-/usr/local/cuda}"/bin/compute-sanitizer 2>/dev/null)
  if [ -z "$san" ]; then
    [ "$DRY" = 1 ] && san=compute-sanitizer
  fi
  if [ -z "$san" ]; then
    echo "compute-sanitizer not found"
    record "sanitize:all" skipped 0 "compute-sanitizer not found"
    return 1
  fi
  each=$((STAGE_LIMIT / 3))
  local workload=("$PY" benches/gpu_suite.py workload --tiny)
  local tri=()
  [ "${SANITIZE_TRITON:-0}" = 1 ] && tri=(--triton)
  sanitize_one memcheck "$each" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$san" --tool memcheck --leak-check no \
    --print-limit 50 --error-exitcode 99 "${workload[@]}" "${tri[@]}" || rc=1
  sanitize_one racecheck "$each" "$san" --tool racecheck --racecheck-report hazard --print-limit 50 \
    --error-exitcode 99 "${workload[@]}" --dtypes float16,bfloat16,float32 || rc=1
  sanitize_one synccheck "$each" "$san" --tool synccheck --print-limit 50 --error-exitcode 99 "${workload[@]}" || rc=1
  return $rc
}

sanitize_one() {  # TOOL SECONDS COMMAND...: records rc and the first telling line (e.g. "Device not supported")
  local tool=$1 secs=$2 t=$SECONDS rc note
  shift 2
  echo "--- $tool: $*"
  if [ "$DRY" = 1 ]; then echo "[dry run] timeout $secs $*"; rc=0
  else
    timeout --kill-after=5 "$secs" "$@" 2>&1 | tee "$WORK/san-$tool.txt"
    rc=${PIPESTATUS[0]}
  fi
  note=$(grep -m1 -iE "not supported|ERROR SUMMARY|error [0-9]+|unable|failed" "$WORK/san-$tool.txt" 2>/dev/null |
    cut -c1-160)
  record "sanitize:$tool" "$rc" "$((SECONDS - t))" "$note"
  echo "--- $tool: rc=$rc in $((SECONDS - t)) s"
  return "$rc"
}

layers() {
  local tri=(--triton)
  suite layers --models conv_medium@224,hybrid_medium@256 --batches 256,1 "${tri[@]}" \
    --deadline "$(($(date +%s) + STAGE_LIMIT - 15))" --out "$OUT"
}

# ---- the run
warm compile
stage build 60 300 build || { echo "build failed: stopping"; FAILED+=("stopped after the build"); finish; }
warm ours-triton
stage check 45 150 check
stop_warm
stage e2e 90 240 e2e
stage tests_cuda 45 150 tests_cuda
stage tests_triton 45 150 tests_triton
stage sanitize 30 120 sanitize
stage layers 45 150 layers
finish
