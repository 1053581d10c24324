#!/usr/bin/env bash
# Device calls (nvidia-h100-x1) for the fused forward of issue 4 (KernelConfig.fused_de: the
# forward of a differentiated call also accumulates sum_v softmax_rv c_v, so the backward runs
# only the dC kernel). Steps: TESTS (gpu-marked tests, TEST_K / TEST_FILES / TEST_S), BENCH
# (VARIANTS against each other at the issue's shape, per D in DS), PARTS=1 (each kernel alone,
# PARTS_VARIANTS_<D>, PARTS_ONLY), TRAIN=1 (SASRec CE vs CCE on Games, then CCE steps at the
# Zvuk shape; needs .data_carry). Logs and JSON under $OUT. Switch steps off with TESTS= / BENCH=.
#   DS="64 128 256" bash experiments/gpu_session_fused.sh
#   TESTS= BENCH= TRAIN=1 bash experiments/gpu_session_fused.sh
set -u
. "$(dirname "$0")/gpu_session_lib.sh"
kernel_session_setup

if [ -n "${TESTS-1}" ]; then
  timeout ${TEST_S:-240} $PY -m pytest -v -rA -m gpu -p no:cacheprovider ${TEST_FILES:-tests/kernels/test_cce.py} \
    -k "${TEST_K:-fused or unfused or overflow}" 2>&1 | grep -v Warning | tee "$OUT/gpu_tests${TEST_TAG-}.log" | tail -4
fi

if [ -n "${BENCH-1}" ]; then
  VARIANTS=${VARIANTS:-'{"unfused": {"fused_de": false}, "fused": {"fused_de": true}}'}
  for d in ${DS:-128}; do
    timeout ${BENCH_S:-200} $PY -m experiments.benchmark_loss --d $d --reps 5 --variants "$VARIANTS" \
      --out "$OUT/fused_d$d.json" 2>&1 | grep -v -i warn | tee -a "$OUT/fused_bench.log" | grep '"case"' \
      | $PY -c "import sys, json
for l in sys.stdin:
    r = json.loads(l); print(r['d'], r['case'], 'fwd', r.get('fwd_ms'), 'f+b', r.get('fwd_bwd_ms'), 'temp', r.get('temp_mib'), r.get('error', ''))"
  done
fi

# Each kernel alone (experiments/benchmark_cce_parts.py); PARTS_VARIANTS_<D> sweeps fde_* tiles.
if [ -n "${PARTS-}" ]; then
  for d in ${DS:-128}; do
    var=PARTS_VARIANTS_$d; variants=${!var-}; variants=${variants:-'{"default": {}}'}
    timeout ${PARTS_S:-200} $PY -m experiments.benchmark_cce_parts --d $d --reps 5 \
      --variants "$variants" ${PARTS_ONLY:+--parts $PARTS_ONLY} \
      --out "$OUT/parts_d$d.json" 2>&1 | grep -v -i warn | tee -a "$OUT/parts.log"
  done
fi

# SASRec with the fused-forward defaults: CE and CCE on the shared Games set at the same time on
# the one GPU (TRAIN_S s each), then CCE training steps at the Zvuk shape for 1e4..1e7 items.
if [ -n "${TRAIN-}" ]; then
  session_setup /tmp/fused_train 120 120  # work folder, training budget, slack (s)
  for loss in ce cce; do run "games_$loss" "configs/amazon_games_$loss.py" & done
  wait
  $PY -m experiments.run_table "$W" 2>&1 | tee "$OUT/train_table.log"
  show_failed_runs
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.95 timeout ${CATALOG_S:-240} $PY -m experiments.catalog_scale \
    --out "$OUT/catalog_cce.json" --losses=cce --catalogs=${CATALOGS:-1e4,1e5,1e6,1e7} --steps 3 \
    --warmup 1 --time_budget_s ${CATALOG_BUDGET_S:-180} > "$OUT/catalog_cce.log" 2>&1
  echo "catalog rc=$?"; tail -n 6 "$OUT/catalog_cce.log"
fi
