#!/usr/bin/env bash
# Device call (nvidia-h100-x1): the Mosaic GPU CCE forward (pallas_kernels/cce/forward_mosaic.py).
# Steps (each skipped when its variable is empty):
#   TESTS  the gpu-marked tests of tests/kernels/test_cce_mosaic.py (compiled kernel vs float64);
#   RING   ring depths 1-4 at D in RING_DS, compiled, against float64 (max |err| per depth);
#   BENCH  (Ds) `benchmark_loss --fwd-only`: the undifferentiated loss with the Triton forward and
#          the Mosaic variants of ${VARS:-VARIANTS_}<D> (JSON, KernelConfig fields), N = 131072,
#          V = 10^6;
#   AB     (Ds) the defaults against fwd_impl="triton", forward only, AB_REPS repetitions, in
#          one process;
#   DEFAULTS `benchmark_loss --cases cce_pallas` (forward and forward + backward, the defaults)
#          at D = 64 128 256 and V in 16384 131072 4000000 at D = 128.
# Logs under $OUT.
#   TESTS=1 RING=1 BENCH="128 256" bash experiments/gpu_session_mosaic.sh
#   TEST_FILES="tests/kernels/test_cce.py tests/kernels/test_cce_mosaic.py" AB="128 256" DEFAULTS=1 \
#     bash experiments/gpu_session_mosaic.sh
set -u
. "$(dirname "$0")/gpu_session_lib.sh"
kernel_session_setup
# The variants measured in the eleventh session (KernelConfig fields; "triton" = the defaults).
: ${VARIANTS_64:='{"triton": {"fwd_impl": "triton"}, "m64x64s6": {"fwd_impl": "mosaic", "mosaic_block_n": 64, "mosaic_block_v": 64, "mosaic_slots": 6}, "m128x64s6r": {"fwd_impl": "mosaic", "mosaic_block_n": 128, "mosaic_block_v": 64, "mosaic_slots": 6, "mosaic_lhs_regs": true}, "m128x64s12r": {"fwd_impl": "mosaic", "mosaic_block_n": 128, "mosaic_block_v": 64, "mosaic_slots": 12, "mosaic_lhs_regs": true}, "m64x128s4r": {"fwd_impl": "mosaic", "mosaic_block_n": 64, "mosaic_block_v": 128, "mosaic_slots": 4, "mosaic_lhs_regs": true}, "m128x128s6r": {"fwd_impl": "mosaic", "mosaic_block_n": 128, "mosaic_block_v": 128, "mosaic_slots": 6, "mosaic_lhs_regs": true}}'}
: ${VARIANTS_128:='{"triton": {"fwd_impl": "triton"}, "m128x64s8": {"fwd_impl": "mosaic", "mosaic_block_n": 128, "mosaic_block_v": 64, "mosaic_slots": 8}, "m128x64s8r": {"fwd_impl": "mosaic", "mosaic_block_n": 128, "mosaic_block_v": 64, "mosaic_slots": 8, "mosaic_lhs_regs": true}, "m128x64s6r": {"fwd_impl": "mosaic", "mosaic_block_n": 128, "mosaic_block_v": 64, "mosaic_slots": 6, "mosaic_lhs_regs": true}, "m128x64s9r": {"fwd_impl": "mosaic", "mosaic_block_n": 128, "mosaic_block_v": 64, "mosaic_slots": 9, "mosaic_lhs_regs": true}, "m128x64s10r": {"fwd_impl": "mosaic", "mosaic_block_n": 128, "mosaic_block_v": 64, "mosaic_slots": 10, "mosaic_lhs_regs": true}, "m128x64s8rnp": {"fwd_impl": "mosaic", "mosaic_block_n": 128, "mosaic_block_v": 64, "mosaic_slots": 8, "mosaic_lhs_regs": true, "mosaic_pingpong": false}}'}
: ${VARIANTS_256:='{"triton": {"fwd_impl": "triton"}, "m64x64s3": {"fwd_impl": "mosaic", "mosaic_block_n": 64, "mosaic_block_v": 64, "mosaic_slots": 3}, "m64x64s3r": {"fwd_impl": "mosaic", "mosaic_block_n": 64, "mosaic_block_v": 64, "mosaic_slots": 3, "mosaic_lhs_regs": true}, "m64x64s4": {"fwd_impl": "mosaic", "mosaic_block_n": 64, "mosaic_block_v": 64, "mosaic_slots": 4}, "m64x64s4r": {"fwd_impl": "mosaic", "mosaic_block_n": 64, "mosaic_block_v": 64, "mosaic_slots": 4, "mosaic_lhs_regs": true}, "m64x64s5r": {"fwd_impl": "mosaic", "mosaic_block_n": 64, "mosaic_block_v": 64, "mosaic_slots": 5, "mosaic_lhs_regs": true}}'}
# Three compute warpgroups without the ping-pong (BENCH with VARS=VARIANTS3_).
: ${VARIANTS3_64:='{"triton": {"fwd_impl": "triton"}, "m128x64s6r": {"fwd_impl": "mosaic", "mosaic_block_n": 128, "mosaic_block_v": 64, "mosaic_slots": 6, "mosaic_lhs_regs": true}, "w3_64x64s6r": {"fwd_impl": "mosaic", "mosaic_block_n": 64, "mosaic_block_v": 64, "mosaic_slots": 6, "mosaic_lhs_regs": true, "mosaic_compute_wgs": 3, "mosaic_pingpong": false}, "w3_64x64s9r": {"fwd_impl": "mosaic", "mosaic_block_n": 64, "mosaic_block_v": 64, "mosaic_slots": 9, "mosaic_lhs_regs": true, "mosaic_compute_wgs": 3, "mosaic_pingpong": false}, "w3_64x128s4r": {"fwd_impl": "mosaic", "mosaic_block_n": 64, "mosaic_block_v": 128, "mosaic_slots": 4, "mosaic_lhs_regs": true, "mosaic_compute_wgs": 3, "mosaic_pingpong": false}, "w3_64x64s6": {"fwd_impl": "mosaic", "mosaic_block_n": 64, "mosaic_block_v": 64, "mosaic_slots": 6, "mosaic_compute_wgs": 3, "mosaic_pingpong": false}, "w3_128x64s6r": {"fwd_impl": "mosaic", "mosaic_block_n": 128, "mosaic_block_v": 64, "mosaic_slots": 6, "mosaic_lhs_regs": true, "mosaic_compute_wgs": 3, "mosaic_pingpong": false}}'}
: ${VARIANTS3_128:='{"triton": {"fwd_impl": "triton"}, "default": {}, "w3_64x64s8r": {"fwd_impl": "mosaic", "mosaic_block_n": 64, "mosaic_block_v": 64, "mosaic_slots": 8, "mosaic_lhs_regs": true, "mosaic_compute_wgs": 3, "mosaic_pingpong": false}, "w3_64x128s4r": {"fwd_impl": "mosaic", "mosaic_block_n": 64, "mosaic_block_v": 128, "mosaic_slots": 4, "mosaic_lhs_regs": true, "mosaic_compute_wgs": 3, "mosaic_pingpong": false}, "w3_128x64s6r": {"fwd_impl": "mosaic", "mosaic_block_n": 128, "mosaic_block_v": 64, "mosaic_slots": 6, "mosaic_lhs_regs": true, "mosaic_compute_wgs": 3, "mosaic_pingpong": false}}'}
if [ -n "${TESTS-1}" ]; then
  timeout ${TESTS_S:-240} $PY -m pytest -q -m gpu -n ${TEST_WORKERS:-4} ${TEST_FILES:-tests/kernels/test_cce_mosaic.py} \
    2>&1 | tail -n 30 > "$OUT/gpu_tests.log"
  echo "tests rc=$?"; tail -n 3 "$OUT/gpu_tests.log"
fi
if [ -n "${RING-}" ]; then
  timeout ${RING_S:-120} $PY - <<'PY' 2>&1 | grep -v Warning | tee "$OUT/ring.log"
import os, numpy as np, jax, jax.numpy as jnp
from tests.kernels import test_cce_mosaic as t
for d in [int(x) for x in os.environ.get("RING_DS", "64 256").split()]:
    e, c, tg = t._inputs(t._rng("ring", d), 1000, 5032, d, jnp.bfloat16, scale=2.0)
    for slots in (1, 2, 3, 4):
        for pingpong in (True, False):
            try:
                t._check_lse(e, c, tg, interpret=False, block_n=64, block_v=64, slots=slots,
                             pingpong=pingpong)
                print(d, slots, pingpong, "ok", flush=True)
            except AssertionError as err:
                print(d, slots, pingpong, "WRONG", err, flush=True)
PY
fi
for d in ${BENCH-}; do
  var="${VARS:-VARIANTS_}$d"
  timeout ${BENCH_S:-200} $PY -m experiments.benchmark_loss --d $d --fwd-only --reps ${REPS:-5} \
    --variants "${!var}" --out "$OUT/${VARS:-}mosaic_fwd_d$d.json" 2>&1 | grep -v Warning \
    | tee "$OUT/${VARS:-}bench_d$d.log"
done
if [ -n "${AB-}" ]; then
  timeout ${AB_S:-200} $PY -m experiments.benchmark_loss --d $AB --fwd-only --reps ${AB_REPS:-10} \
    --variants '{"triton": {"fwd_impl": "triton"}, "default": {}}' --out "$OUT/ab.json" 2>&1 \
    | grep -v Warning | tee "$OUT/ab.log"
fi
if [ -n "${DEFAULTS-}" ]; then
  timeout ${DEFAULTS_S:-240} $PY -m experiments.benchmark_loss --cases cce_pallas --d 64 128 256 \
    --v-sweep 16384 131072 4000000 --reps 5 --out "$OUT/cce_defaults.json" 2>&1 \
    | grep -v Warning | tee "$OUT/defaults.log"
fi
