#!/usr/bin/env bash
# One device call (nvidia-h100-x1) for issue 5's one-pass row kernel (fused.py): every gpu test
# of test_cce_neg.py, the row benchmark with the fused kernel on and off for both dC
# accumulations, and a sweep of the fused kernel's persistent grid. Logs and JSON under $OUT.
#   bash experiments/gpu_session_cce_neg_fused.sh      (PROGRAMS="1024 4096": the sweep at D = SWEEP_DS)
set -u
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
PY=${PY:-python3}
{ date -u; nvidia-smi -L; $PY -c "import sys, jax; print(sys.version.split()[0], jax.__version__)"; } 2>&1 | tee "$OUT/env.log"
if [ -n "${TESTS-1}" ]; then
  timeout ${TEST_S:-300} $PY -m pytest -v -rA -m gpu -p no:cacheprovider tests/kernels/test_cce_neg.py \
    ${TEST_K:+-k "$TEST_K"} 2>&1 | grep -v Warning | tee "$OUT/gpu_tests.log" | tail -4
fi
if [ -n "${BENCH-1}" ]; then
  timeout ${BENCH_S:-280} $PY -m experiments.benchmark_sampled --d ${DS:-64 128 256} --sharing row \
    --fused on off --dc-accum float32 bfloat16 \
    --out "$OUT/cce_neg_fused_bench.json" 2>&1 | grep -v Warning | tee "$OUT/bench.log" | tail -14
fi
for d in ${SWEEP_DS:-64 128}; do
  for pr in ${PROGRAMS-}; do
    timeout ${SWEEP_S:-100} $PY -m experiments.benchmark_sampled --d $d --sharing row --reps 3 \
      --copy-gib 0.5 --fused on --dc-accum bfloat16 float32 --fused-programs $pr ${SWEEP_ARGS-} \
      --out "$OUT/sweep_d${d}_p$pr.json" 2>&1 | grep -E '^ *[0-9]+ +row' | sed "s/\$/  programs=$pr/" | tee -a "$OUT/sweep.log"
  done
done
