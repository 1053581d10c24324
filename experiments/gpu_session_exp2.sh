#!/usr/bin/env bash
# One device call: kernel variants of the CCE exponentials (polynomial exp2 on the FMA pipes for
# part of each catalog step, prefetching forward loop) against the defaults, at N = 131072,
# V = 1e6, bf16; then the gpu-marked tests of those variants if time is left. Logs under $OUT.
#   DS="64 128" bash experiments/gpu_session_exp2.sh
#   DS=128 VARIANTS='{"base": {}, "bp3": {"bwd_poly_v": 64}}' bash experiments/gpu_session_exp2.sh
set -u
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
PY=${PY:-python3}
{ date -u; nvidia-smi -L; $PY -c "import sys, jax; print(sys.version.split()[0], jax.__version__)"; } 2>&1 | tee "$OUT/env.log"
# Per D: the default tiles' block_v (fwd, bwd); poly parts of 1/2 block_v (1/3 of a step) and
# block_v (1/2 of a step).
variants() {
  local fv=$1 bv=$2
  echo "{\"base\": {}, \"pre\": {\"fwd_prefetch\": true},
   \"fp3\": {\"fwd_poly_v\": $((fv / 2))}, \"fp2\": {\"fwd_poly_v\": $fv},
   \"fp3pre\": {\"fwd_poly_v\": $((fv / 2)), \"fwd_prefetch\": true},
   \"bp3\": {\"bwd_poly_v\": $((bv / 2))}, \"bp2\": {\"bwd_poly_v\": $bv}}"
}
for d in ${DS:-64 128 256}; do
  case $d in 64) v=$(variants 128 64);; 128) v=$(variants 128 128);; *) v=$(variants 64 64);; esac
  v=${VARIANTS:-$v}  # replaces the list for every D
  timeout ${BENCH_S:-280} $PY -m experiments.benchmark_loss --d $d --reps ${REPS:-3} --variants "$v" \
    --out "$OUT/exp2_d$d.json" 2>&1 | grep -v -i warn | tee "$OUT/exp2_d$d.log" | tail -9
done
if [ -n "${TESTS:-}" ]; then
  timeout ${TEST_S:-200} $PY -m pytest -q -rA -m gpu -p no:cacheprovider tests/kernels/test_cce_exp2_poly.py \
    "tests/kernels/test_cce.py" -k "poly" 2>&1 | grep -v Warning | tee "$OUT/gpu_tests_exp2.log" | tail -12
fi
