#!/usr/bin/env bash
# Device call (nvidia-h100-x1): relaxed vs acq_rel dC atomic adds (pallas_kernels/atomics.py).
# Steps (each skipped when its variable is empty): TESTS the gpu tests of the atomics and CCE-;
# BENCH benchmark_sampled with both orderings; CCE the CCE "atomic" backward mode with both;
# BENCH_ARGS replaces the benchmark's "--atomics relaxed acq_rel" (e.g. "--fused on off");
# SWEEP ("ROWSxWARPS ...") row tile and warps of the row-sharing kernels, both dC dtypes, at
# SWEEP_DS, with SWEEP_ARGS; PART ("ITEMS ...") the item-partitioned row backward at D = 128, f32 dC;
# NCU (D) Nsight Compute with the SASS page of one row-sharing backward launch per ordering,
# summed per opcode by experiments/sass_mix.py. Logs and JSON under $OUT.
#   TESTS=1 BENCH=1 CCE=1 NCU=128 bash experiments/gpu_session_atomics.sh
set -u
. "$(dirname "$0")/gpu_session_lib.sh"
kernel_session_setup
if [ -n "${TESTS-1}" ]; then
  timeout ${TEST_S:-240} $PY -m pytest -q -m gpu -n ${TEST_PROCS:-4} -p no:cacheprovider \
    tests/kernels/test_atomics.py tests/kernels/test_cce_neg.py 2>&1 | tee "$OUT/gpu_tests.log" | tail -8
  # the CCE "atomic" backward mode (relaxed by default now)
  timeout ${TEST_S:-240} $PY -m pytest -q -m gpu -n ${TEST_PROCS:-4} -p no:cacheprovider \
    tests/kernels/test_cce.py tests/kernels/test_cce_filter.py -k atomic 2>&1 \
    | tee -a "$OUT/gpu_tests.log" | tail -4
fi
if [ -n "${BENCH-1}" ]; then
  timeout ${BENCH_S:-330} $PY -m experiments.benchmark_sampled --d ${DS:-64 128 256} \
    --sharing ${SHARING:-row block} --dc-accum float32 bfloat16 ${BENCH_ARGS:---atomics relaxed acq_rel} \
    --reps ${REPS:-5} --out "$OUT/cce_neg_atomics.json" 2>&1 | grep -v Warning \
    | tee "$OUT/bench.log" | tail -20
fi
if [ -n "${CCE-}" ]; then
  timeout ${CCE_S:-150} $PY -m experiments.benchmark_loss --d ${CCE_DS:-128} --reps 3 \
    --variants '{"atomic_relaxed": {"bwd_mode": "atomic", "fused_de": false},
                 "atomic_acq_rel": {"bwd_mode": "atomic", "fused_de": false, "atomics": "acq_rel"}}' \
    2>&1 | grep -v Warning | tee "$OUT/cce_atomic.log" | tail -8
fi
if [ -n "${SWEEP-}" ]; then
  for rw in $SWEEP; do
    echo "== row_block x warps $rw" >> "$OUT/sweep.log"
    timeout ${SWEEP_S:-120} $PY -m experiments.benchmark_sampled --d ${SWEEP_DS:-64 128 256} \
      --sharing row --dc-accum float32 bfloat16 --reps 3 --copy-gib 0.5 \
      --row-block ${rw%x*} --num-warps ${rw#*x} ${SWEEP_ARGS-} 2>&1 | grep -v Warning >> "$OUT/sweep.log"
    echo "sweep $rw rc=$?"
  done
  grep -E '^==|^ *[0-9]+ +row' "$OUT/sweep.log"
fi
if [ -n "${PART-}" ]; then
  for items in $PART; do
    echo "== dc_part_items $items" >> "$OUT/part.log"
    timeout ${PART_S:-120} $PY -m experiments.benchmark_sampled --d 128 --sharing row \
      --dc-accum float32 --reps 3 --copy-gib 0.5 --dc-part-items $items 2>&1 | grep -v Warning \
      | tee -a "$OUT/part.log" | grep -E '^ *[0-9]+ +row'
  done
fi
if [ -n "${NCU-}" ]; then
  NCU_BIN=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  for ord in relaxed acq_rel; do
    tag=row_bwd_d${NCU}_${ord}
    timeout ${NCU_S:-150} $NCU_BIN -k "regex:cce_neg_bwd_row" --launch-skip 1 --launch-count 1 \
      --section SpeedOfLight --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis \
      --section SourceCounters -o /tmp/ncu_$tag \
      $PY -m experiments.benchmark_sampled --d $NCU --sharing row --reps 1 --copy-gib 0.25 \
      --dc-accum ${NCU_ACCUM:-float32} --atomics $ord > /tmp/ncu_$tag.log 2>&1
    echo "ncu $tag rc=$?" | tee -a "$OUT/ncu_details.txt"
    $NCU_BIN --import /tmp/ncu_$tag.ncu-rep --page details >> "$OUT/ncu_details.txt" 2>&1
    $NCU_BIN --import /tmp/ncu_$tag.ncu-rep --page source --csv --print-source sass > /tmp/sass_$tag.csv
    $PY -m experiments.sass_mix /tmp/sass_$tag.csv --top 40 | tee -a "$OUT/sass_mix.log" \
      | grep -E "warp instructions|RED|ATOM|MEMBAR|FENCE|CCTL|ERRBAR"
  done
  (cd /tmp && tar czf "$OUT/sass_csv.tar.gz" sass_row_bwd_*.csv)  # (at most 8 files come back)
fi
