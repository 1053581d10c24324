#!/usr/bin/env bash
# One device call (nvidia-h100-x1) for issue 5's permutation sampler (uniform row sharing with
# an atomic-free dC backward): every gpu test of test_cce_neg.py, the row benchmark of both row
# samplings, and a dC tile sweep at D = 128. Logs and JSON under $OUT.
#   bash experiments/gpu_session_perm.sh            (DC_BLOCKS="16 32": the dC tile sweep)
set -u
. "$(dirname "$0")/gpu_session_lib.sh"
kernel_session_setup
if [ -n "${TESTS-1}" ]; then
  timeout ${TEST_S:-240} $PY -m pytest -v -rA -m gpu -p no:cacheprovider tests/kernels/test_cce_neg.py \
    ${TEST_K:+-k "$TEST_K"} 2>&1 | grep -v Warning | tee "$OUT/gpu_tests.log" | tail -4
fi
if [ -n "${BENCH-1}" ]; then
  timeout ${BENCH_S:-200} $PY -m experiments.benchmark_sampled --d ${DS:-64 128 256} --sharing row \
    --row-sampling permutation independent --dc-accum float32 bfloat16 \
    --out "$OUT/cce_neg_perm_h100.json" 2>&1 | grep -v Warning | tee "$OUT/bench.log" | tail -10
fi
if [ -n "${SWEEP-1}" ]; then
  for bv in ${DC_BLOCKS-}; do
    timeout ${SWEEP_S:-100} $PY -m experiments.benchmark_sampled --d 128 --sharing row --reps 3 \
      --dc-block $bv --out "$OUT/sweep_dc_block_$bv.json" 2>&1 | grep -E '^ *[0-9]+ +row' | tee -a "$OUT/sweep.log"
  done
fi
