#!/usr/bin/env bash
# One single-GPU device call for both kernel families: every gpu-marked kernel test, the CCE
# benchmark (N = 131072, V = 1e6, D = 64/128/256) and the CCE- benchmark (n + 1 = 512, row / block /
# batch sharing). Logs and JSON under $OUT (6 files), compact results on stdout.
#   TAG=h100 bash experiments/gpu_session_kernels.sh
# Each step has its own timeout (defaults sum to 530 s); leave TESTS / CCE / CCE_NEG empty to skip.
set -u
. "$(dirname "$0")/gpu_session_lib.sh"
kernel_session_setup
TAG=${TAG:-gpu}
if [ -n "${TESTS-1}" ]; then
  timeout ${TEST_S:-230} $PY -m pytest -q -rf -m gpu tests/kernels -p no:cacheprovider ${TEST_ARGS:-} 2>&1 \
    | grep -v -i warn | tee "$OUT/gpu_tests.log" | tail -15
  echo "tests rc=${PIPESTATUS[0]}"
fi
if [ -n "${CCE-1}" ]; then
  timeout ${CCE_S:-180} $PY -m experiments.benchmark_loss --d 64 128 256 --reps 3 ${CCE_ARGS:-} \
    --out "$OUT/cce_$TAG.json" 2>&1 | grep -v -i warn | tee "$OUT/cce_bench.log" | tail -14
fi
if [ -n "${CCE_NEG-1}" ]; then
  timeout ${CCE_NEG_S:-120} $PY -m experiments.benchmark_sampled --d 64 128 256 --sharing row block batch \
    --dc-accum float32 bfloat16 --out "$OUT/cce_neg_$TAG.json" 2>&1 | grep -v -i warn \
    | tee "$OUT/cce_neg_bench.log" | tail -16
fi
date -u
