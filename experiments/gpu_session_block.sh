#!/usr/bin/env bash
# Device call (nvidia-h100-x1): where the time of shared-negative CCE- (sharing="block") goes.
# Steps (each skipped when its variable is empty):
#   TIMES  Nsight Compute's per-kernel time summary of a loss and of a loss + gradients step
#          (experiments/profile_step.py) at each D in DS, f32 and bf16 dC (ACCS): the Pallas
#          kernels against XLA's memsets, converts and reductions, summed per step by
#          experiments/ncu_times.py;
#   DETAIL (D) SpeedOfLight / occupancy / launch / warp-state sections of one launch of each of
#          the block kernels in DETAIL_PARTS ("fwd bwd"), with PROFILE_ARGS (JSON kwargs) if
#          set; with SASS=1 also the SASS page, summed per opcode (experiments/sass_mix.py);
#   BENCH  benchmark_sampled, block and batch sharing at DS (JSON), with BENCH_ARGS;
#   SWEEP  ("IDSxWARPS ...": ids per step x warps) benchmark_sampled on block sharing at SWEEP_DS
#          with SWEEP_ARGS.
# Logs under $OUT.
#   TIMES=1 DETAIL=128 SASS=1 BENCH=1 SWEEP="32x4 64x8" bash experiments/gpu_session_block.sh
set -u
. "$(dirname "$0")/gpu_session_lib.sh"
kernel_session_setup
NCU_BIN=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
if [ -n "${TIMES-1}" ]; then
  for d in ${DS:-64 128 256}; do
    for acc in ${ACCS:-float32 bfloat16}; do
      for grad in "" --grad; do
        [ "$acc" = float32 ] || [ -n "$grad" ] || continue  # (the dC dtype is backward-only)
        kw="{\"sharing\": \"${SHARE:-block}\", \"dc_accum\": \"$acc\"${EXTRA_KW-}}"
        echo "== D=$d $acc ${grad:-loss only} $kw" >> "$OUT/times.log"
        timeout ${TIMES_S:-120} $NCU_BIN --metrics gpu__time_duration.sum --print-summary per-kernel \
          $PY -m experiments.profile_step --d $d $grad --steps 3 --kwargs "$kw" 2>&1 \
          | grep -v -i -e "warning" -e "^==PROF==" >> "$OUT/times.log"
        echo "times D=$d $acc ${grad:-loss} rc=$?"
      done
      [ "${SHARE:-block}" = block ] || break  # (bf16 dC changes only the backward)
    done
  done
  $PY -m experiments.ncu_times "$OUT/times.log" --steps 4 | tee "$OUT/times_summary.log"
fi
if [ -n "${DETAIL-}" ]; then
  pkw=${PROFILE_ARGS:-'{"sharing": "block"}'}
  for part in ${DETAIL_PARTS:-fwd bwd}; do
    timeout ${DETAIL_S:-150} $NCU_BIN -k "regex:cce_neg_${part}_block" --launch-skip 1 --launch-count 1 \
      --section SpeedOfLight --section Occupancy --section LaunchStats --section SchedulerStats \
      --section WarpStateStats --section MemoryWorkloadAnalysis ${SASS:+--section SourceCounters -o /tmp/ncu_$part} \
      $PY -m experiments.profile_step --d $DETAIL --grad --steps 1 \
      --kwargs "$pkw" > "$OUT/detail_${part}_d$DETAIL.log" 2>&1
    echo "detail $part rc=$?"
    if [ -n "${SASS-}" ]; then
      $NCU_BIN --import /tmp/ncu_$part.ncu-rep --page details >> "$OUT/detail_${part}_d$DETAIL.log" 2>&1
      $NCU_BIN --import /tmp/ncu_$part.ncu-rep --page source --csv --print-source sass > /tmp/sass_$part.csv
      $PY -m experiments.sass_mix /tmp/sass_$part.csv --top 30 > "$OUT/sass_${part}_d$DETAIL.log" 2>&1
    fi
  done
fi
if [ -n "${BENCH-}" ]; then
  timeout ${BENCH_S:-240} $PY -m experiments.benchmark_sampled --d ${DS:-64 128 256} \
    --sharing block batch --reps ${REPS:-10} --copy-gib 0.5 ${BENCH_ARGS-} \
    --out "$OUT/block.json" 2>&1 | grep -v Warning | tee "$OUT/bench.log" | tail -8
fi
if [ -n "${SWEEP-}" ]; then
  for ws in $SWEEP; do
    echo "== ids x warps $ws" >> "$OUT/sweep.log"
    timeout ${SWEEP_S:-120} $PY -m experiments.benchmark_sampled --d ${SWEEP_DS:-128} \
      --sharing block --reps 5 --copy-gib 0.25 --neg-block ${ws%x*} --num-warps ${ws#*x} \
      ${SWEEP_ARGS-} 2>&1 | grep -v Warning >> "$OUT/sweep.log"
    echo "sweep $ws rc=$?"
  done
  grep -E '^==|^ *[0-9]+ +block' "$OUT/sweep.log"
fi
