#!/usr/bin/env bash
# Device call (nvidia-h100-x1): Nsight Compute on one launch of each CCE kernel (after a warm-up
# launch) per D in DS and part in NCU_PARTS (benchmark_cce_parts names): occupancy, issue slots,
# pipe utilisation (XU = the MUFU), warp stall reasons, and with SASS=1 the per-instruction SASS
# page as CSV (instruction counts and stall samples). Needs ncu (PATH or /usr/local/cuda/bin).
#   DS="64 128 256" NCU_PARTS="lse_fwd dc_kernel" bash experiments/gpu_session_ncu.sh
set -u
. "$(dirname "$0")/gpu_session_lib.sh"
kernel_session_setup
NCU_BIN=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
STALLS="regex:smsp__average_warps_issue_stalled_.*_per_issue_active.ratio"
PIPES="sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_issued.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum,smsp__inst_executed_pipe_xu.sum"
for d in ${DS:-64 128 256}; do
  for part in ${NCU_PARTS:-lse_fwd}; do
    tag=${part}_d$d${NCU_TAG-}
    timeout ${NCU_S:-240} $NCU_BIN -k "regex:${NCU_KERNEL:-cce_}" --launch-skip 1 --launch-count 1 \
      --section SpeedOfLight --section Occupancy --section LaunchStats --section SchedulerStats \
      --section ComputeWorkloadAnalysis --section WarpStateStats ${SASS:+--section SourceCounters} \
      --metrics "$STALLS,$PIPES" ${SASS:+-o /tmp/ncu_$tag} \
      $PY -m experiments.benchmark_cce_parts --d $d --reps 1 --parts $part \
      ${NCU_VARIANTS:+--variants "$NCU_VARIANTS"} > "$OUT/ncu_$tag.log" 2>&1
    echo "ncu $tag rc=$?"
    if [ -n "${SASS-}" ]; then
      $NCU_BIN --import /tmp/ncu_$tag.ncu-rep --page source --csv --print-source sass > "$OUT/sass_$tag.csv"
      $PY -m experiments.sass_mix "$OUT/sass_$tag.csv" | tee -a "$OUT/sass_mix.log"
    fi
  done
done
