#!/usr/bin/env bash
# Device call (nvidia-h100-x1): exponentials on the FMA units (KernelConfig.exp_poly /
# bwd_exp_poly, common.exp2_poly: K of every 8 exponentials). Steps (each skipped when its variable is empty):
#   TESTS  the gpu-marked tests of ${TEST_FILES:-tests/kernels/test_exp2_poly.py};
#   FWD    (Ds) `benchmark_loss --fwd-only`, the variants of ${FVARS:-FWD_}<D> (JSON, KernelConfig
#          fields), N = 131072, V = 10^6, REPS repetitions;
#   FB     (Ds) forward + backward, the variants of ${BVARS:-FB_}<D>.
# Logs and JSON under $OUT.
#   TESTS=1 FWD="64 128" FB="64 128" bash experiments/gpu_session_poly.sh
set -u
. "$(dirname "$0")/gpu_session_lib.sh"
kernel_session_setup
t='"fwd_impl": "triton"'
: ${FWD_64:="{\"p0\": {$t}, \"p1\": {$t, \"exp_poly\": 1}, \"p2\": {$t, \"exp_poly\": 2}, \"p1s\": {$t, \"exp_poly\": 1, \"fwd_sum_tile\": true}}"}
: ${FWD_128:="{\"default\": {}, \"p0\": {$t}, \"p1\": {$t, \"exp_poly\": 1}}"}
: ${FWD_256:="{\"default\": {}, \"p0\": {$t}, \"p1\": {$t, \"exp_poly\": 1}}"}
# The Triton forward's tiles at D = 64 again (FWD with FVARS=TILES_).
: ${TILES_64:="{\"p0\": {$t}, \"t64x64s3\": {$t, \"fwd_block_v\": 64}, \"t64x64s4\": {$t, \"fwd_block_v\": 64, \"fwd_stages\": 4}, \"t64x64s5\": {$t, \"fwd_block_v\": 64, \"fwd_stages\": 5}, \"t64x128s4\": {$t, \"fwd_stages\": 4}, \"t64x128s2\": {$t, \"fwd_stages\": 2}, \"t128x64w8\": {$t, \"fwd_block_n\": 128, \"fwd_block_v\": 64, \"fwd_warps\": 8}, \"t128x128w8\": {$t, \"fwd_block_n\": 128, \"fwd_warps\": 8}}"}
: ${FB_64:='{"base": {}, "f1": {"exp_poly": 1}, "b1": {"bwd_exp_poly": 1}, "f1b1": {"exp_poly": 1, "bwd_exp_poly": 1}}'}
: ${FB_128:='{"base": {}, "f1": {"exp_poly": 1}, "b1": {"bwd_exp_poly": 1}, "f1b1": {"exp_poly": 1, "bwd_exp_poly": 1}}'}
: ${FB_256:='{"base": {}, "f1b1": {"exp_poly": 1, "bwd_exp_poly": 1}}'}
if [ -n "${TESTS-}" ]; then
  timeout ${TESTS_S:-300} $PY -m pytest -q -m gpu -n ${TEST_WORKERS:-4} \
    ${TEST_FILES:-tests/kernels/test_exp2_poly.py} 2>&1 | tail -n 30 > "$OUT/gpu_tests.log"
  echo "tests rc=$?"; tail -n 3 "$OUT/gpu_tests.log"
fi
for d in ${FWD-}; do
  var="${FVARS:-FWD_}$d"
  timeout ${FWD_S:-200} $PY -m experiments.benchmark_loss --d $d --fwd-only --reps ${REPS:-7} \
    --variants "${!var}" --out "$OUT/${FVARS:-}poly_fwd_d$d.json" 2>&1 | grep -v Warning \
    | tee "$OUT/${FVARS:-}fwd_d$d.log"
done
for d in ${FB-}; do
  var="${BVARS:-FB_}$d"
  timeout ${FB_S:-240} $PY -m experiments.benchmark_loss --d $d --reps ${REPS:-5} \
    --variants "${!var}" --out "$OUT/poly_fb_d$d.json" 2>&1 | grep -v Warning \
    | tee "$OUT/fb_d$d.log"
done
