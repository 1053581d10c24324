#!/usr/bin/env bash
# One device call for the CCE kernels: gpu-marked tests, an optional tile sweep, the benchmark.
# Logs and JSON under $OUT. Steps are skipped by leaving their variable empty.
#   TESTS=1 TUNE="--d 128 --n 32768" BENCH="--d 64 128 256" bash experiments/gpu_session_cce.sh
set -u
. "$(dirname "$0")/gpu_session_lib.sh"
kernel_session_setup
if [ -n "${TESTS:-}" ]; then
  timeout ${TEST_S:-200} $PY -m pytest -q -rA -m gpu tests/kernels/test_cce.py -p no:cacheprovider \
    ${TEST_ARGS:-} 2>&1 | grep -v Warning | tee "$OUT/gpu_tests.log" | tail -30
fi
if [ -n "${TUNE:-}" ]; then
  timeout ${TUNE_S:-200} $PY -m experiments.benchmark_loss --tune $TUNE --out "$OUT/cce_tune.json" 2>&1 \
    | grep -v -i warn | tee "$OUT/tune.log" | grep -E '^ *tune|device='
fi
if [ -n "${BENCH:-}" ]; then
  timeout ${BENCH_S:-300} $PY -m experiments.benchmark_loss $BENCH --out "$OUT/cce_${TAG:-gpu}.json" 2>&1 \
    | grep -v -i warn | tee "$OUT/bench.log" | tail -25
fi
