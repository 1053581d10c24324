#!/usr/bin/env bash
# One device call for CCE-: gpu tests, benchmark, a small tuning sweep. Logs under $OUT.
set -u
. "$(dirname "$0")/gpu_session_lib.sh"
kernel_session_setup
timeout ${TEST_S:-200} $PY -m pytest -q -m gpu tests/kernels/test_cce_neg.py --maxfail=4 -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.log" | tail -25
timeout ${BENCH_S:-200} $PY -m experiments.benchmark_sampled --d 64 128 256 --sharing row block batch --dc-accum float32 bfloat16 \
  --out "$OUT/cce_neg_${TAG:-gpu}.json" 2>&1 | grep -v Warning | tee "$OUT/bench.log" | tail -16
if [ -n "${SWEEP:-}" ]; then
  timeout ${SWEEP_S:-150} bash -c "$SWEEP" 2>&1 | grep -v Warning | tee "$OUT/sweep.log" | grep -E '^ *[0-9]+ +(row|block|batch)'
fi
