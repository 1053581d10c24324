#!/usr/bin/env bash
# Device call (nvidia-h100-x1): the clock and power the CCE forward runs at
# (experiments/clock_probe.py). Steps (each skipped when its variable is empty):
#   CLOCK  (Ds) clock_probe with the defaults: a MUFU-only kernel, the loss alone at each D, a
#          bf16 matmul, each run back to back for CLOCK_S seconds under nvidia-smi sampling;
#   ROWS   (Ds) the Triton forward's row tiles of ROW_VARIANTS (fewer catalog bytes per logit
#          from L2): `benchmark_loss --fwd-only`, then clock_probe on the same variants.
# Logs and JSON under $OUT.
#   CLOCK="64 128 256" ROWS=64 bash experiments/gpu_session_power.sh
set -u
. "$(dirname "$0")/gpu_session_lib.sh"
kernel_session_setup
t='"fwd_impl": "triton"'
: ${ROW_VARIANTS:="{\"p0\": {$t}, \"t128x64w4\": {$t, \"fwd_block_n\": 128, \"fwd_block_v\": 64}, \"t128x64w4s4\": {$t, \"fwd_block_n\": 128, \"fwd_block_v\": 64, \"fwd_stages\": 4}, \"t128x32w4\": {$t, \"fwd_block_n\": 128, \"fwd_block_v\": 32, \"fwd_stages\": 4}, \"t128x128w4\": {$t, \"fwd_block_n\": 128}, \"t256x64w8\": {$t, \"fwd_block_n\": 256, \"fwd_block_v\": 64, \"fwd_warps\": 8}}"}
if [ -n "${CLOCK-}" ]; then
  timeout ${CLOCK_TIMEOUT:-300} $PY -m experiments.clock_probe --d $CLOCK --seconds ${CLOCK_S:-5} \
    --out "$OUT/clock.json" 2>&1 | grep -v Warning | tee "$OUT/clock.log"
fi
if [ -n "${ROWS-}" ]; then
  timeout ${ROWS_S:-240} $PY -m experiments.benchmark_loss --d $ROWS --fwd-only --reps ${REPS:-7} \
    --variants "$ROW_VARIANTS" --out "$OUT/rows_fwd.json" 2>&1 | grep -v Warning | tee "$OUT/rows_fwd.log"
  timeout ${ROWS_S:-240} $PY -m experiments.clock_probe --d $ROWS --seconds ${CLOCK_S:-5} --no-matmul \
    --variants "$ROW_VARIANTS" --out "$OUT/rows_clock.json" 2>&1 | grep -v Warning | tee "$OUT/rows_clock.log"
fi
