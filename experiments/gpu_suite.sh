#!/usr/bin/env bash
# The GPU suite: the gpu-marked tests and the benchmark commands of README.md / docs/performance.md.
#
#   bash experiments/gpu_suite.sh OUT_DIR [STEP ...]
#
# Steps (default: all but the frontier ones): tests, cce, cce_neg, catalog, loop, multi;
# frontier (the CCE- frontier's training runs, about 9 minutes), frontier_timing and zvuk (step
# times and peak memory of the frontier's points and of the Zvuk shape at 10^6 and 10^7 items,
# about 8 minutes together). A step whose Python modules or GPUs are missing is skipped with a
# line in the summary saying what to install.
# Each step writes OUT_DIR/<step>.log (and its JSON where the command has --out); OUT_DIR/summary.md
# gets one line per step: its exit status, its duration and the log's last line.
# Needs: this repository and a Python with jax for CUDA (plus pytest for "tests"; flax, optax,
# ml_collections, polars, orbax for "catalog", "loop" and "multi", i.e. `pip install -e .`).
# Environment: PY (default python3), DATA_DIR (folder with the two Amazon files; without it
# "loop" runs on synthetic data and "frontier" on synthetic_1m only), STEP_TIMEOUT_S (default
# 900 s per step), FRONTIER_BUDGET_S / FRONTIER_DEADLINE_S (default 420 / 520: each frontier run's
# budget, and when runs still going are stopped).
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: bash experiments/gpu_suite.sh OUT_DIR [tests cce cce_neg catalog loop multi" \
    "frontier frontier_timing zvuk]" >&2
  exit 2
fi
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
shift
STEPS=("$@")
[[ ${#STEPS[@]} -eq 0 ]] && STEPS=(tests cce cce_neg catalog loop multi)

cd "$(dirname "$0")/.."
PY=${PY:-python3}
STEP_TIMEOUT_S=${STEP_TIMEOUT_S:-900}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false NCCL_NVLS_ENABLE=0

SUMMARY="$OUT/summary.md"
{
  echo "# GPU suite, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo
  nvidia-smi -L 2>/dev/null || echo "nvidia-smi not found"
  "$PY" -c "import sys, jax; print('python', sys.version.split()[0], 'jax', jax.__version__, jax.devices())"
  echo
  echo "| step | exit | seconds | last line of the log |"
  echo "|---|---|---|---|"
} > "$SUMMARY" 2>&1
N_GPUS=$("$PY" -c "import jax; print(sum(d.platform == 'gpu' for d in jax.devices()))")
if [[ "$N_GPUS" -lt 1 ]]; then
  echo "no GPU visible to jax: install jax for CUDA (pip install -e '.[cuda13]')" | tee -a "$SUMMARY" >&2
  exit 1
fi

has() {  # python modules...: true if all import
  "$PY" -c "import $(IFS=,; echo "$*")" 2>/dev/null
}

skip() {  # name, reason: a summary line for a step this machine cannot run
  echo "| $1 | skipped | 0 | $2 |" >> "$SUMMARY"
  echo "== $1: skipped ($2)"
}

step() {  # name, command...: runs the command with a time limit, logs it, adds a summary line
  local name=$1 start rc=0
  shift
  start=$(date +%s)
  echo "== $name: $*"
  timeout "$STEP_TIMEOUT_S" "$@" > "$OUT/$name.log" 2>&1 || rc=$?
  echo "| $name | $rc | $(( $(date +%s) - start )) | $(tail -n 1 "$OUT/$name.log" | tr '|' '/') |" >> "$SUMMARY"
  echo "   exit $rc (log: $OUT/$name.log)"
}

for s in "${STEPS[@]}"; do
  case "$s" in
    tests)
      if ! has pytest; then skip tests "no pytest: pip install pytest"; continue; fi
      XDIST=(); has xdist && XDIST=(-n 4)
      step tests "$PY" -m pytest -q -m gpu "${XDIST[@]}" tests/kernels ;;
    cce)
      step cce "$PY" -m experiments.benchmark_loss --cases cce_pallas --d 64 128 256 --reps 5 \
        --out "$OUT/cce.json" ;;
    cce_neg)
      step cce_neg "$PY" -m experiments.benchmark_sampled --d 64 128 256 --sharing row block \
        --reps 5 --out "$OUT/cce_neg.json" ;;
    catalog | loop | multi | frontier | frontier_timing | zvuk)
      if ! has absl ml_collections flax optax polars; then
        skip "$s" "needs the package's dependencies: pip install -e ."; continue
      fi ;;&
    catalog)
      step catalog "$PY" -m experiments.catalog_scale --losses=cce,cce_neg,ce,ce_neg \
        --catalogs=1e4,1e5,1e6,1e7 --steps 3 --warmup 1 --out "$OUT/catalog_scale.json" ;;
    loop)
      if [[ -n "${DATA_DIR:-}" ]]; then
        step loop "$PY" -m experiments.benchmark_loop --config configs/amazon_games_cce.py \
          --steps 300 --repeats 3 --out "$OUT/loop.json"
      else
        step loop "$PY" -m experiments.benchmark_loop --steps 300 --repeats 3 --out "$OUT/loop.json"
      fi ;;
    frontier | frontier_timing)
      SETS=(); [[ -z "${DATA_DIR:-}" ]] && SETS=(--sets=synthetic_1m)
      if [[ $s == frontier ]]; then
        step frontier "$PY" -m experiments.cce_neg_frontier --stage runs --out "$OUT/frontier" \
          --budget_s "${FRONTIER_BUDGET_S:-420}" --deadline_s "${FRONTIER_DEADLINE_S:-520}" "${SETS[@]}"
      else
        step frontier_timing "$PY" -m experiments.cce_neg_frontier --stage timing \
          --out "$OUT/frontier" "${SETS[@]}"
      fi ;;
    zvuk)
      # The Zvuk shape (batch 1024 x length 128, hidden 256): full CCE, per-row CCE- (2047
      # negatives) and shared blocks of 128 rows with 1x, 4x, 16x those negatives.
      step zvuk_row "$PY" -m experiments.catalog_scale --losses=cce,cce_neg --catalogs=1e6,1e7 \
        --steps 3 --warmup 1 --out "$OUT/zvuk_row.json"
      for n in 2047 8191 32767; do
        step "zvuk_block_$n" "$PY" -m experiments.catalog_scale --losses=cce_neg \
          --catalogs=1e6,1e7 --num_negatives=$n --config.loss.sharing=block --steps 5 --warmup 1 \
          --out "$OUT/zvuk_block_$n.json"
      done ;;
    multi)
      if [[ "$N_GPUS" -lt 2 ]]; then skip multi "$N_GPUS GPU visible, needs 2 or more"; continue; fi
      step multi_dp_1 env CUDA_VISIBLE_DEVICES=0 "$PY" -m experiments.benchmark_multi_gpu \
        --mode dp --steps 8 --out "$OUT/dp_1gpu.json"
      step "multi_dp_$N_GPUS" "$PY" -m experiments.benchmark_multi_gpu --mode dp --steps 8 \
        --out "$OUT/dp_${N_GPUS}gpu.json"
      step multi_vp "$PY" -m experiments.benchmark_multi_gpu --mode vp --vocab "$N_GPUS" \
        --items 10000000 --loss cce_neg --num-negatives 2047 --steps 8 \
        --out "$OUT/vp_${N_GPUS}gpu_cce_neg.json" ;;
    *)
      echo "unknown step '$s': choose from tests cce cce_neg catalog loop multi frontier" \
        "frontier_timing zvuk" >&2
      exit 2 ;;
  esac
done

echo
cat "$SUMMARY"
# Exit status 1 if any step failed, so a caller can tell a clean run.
awk -F'|' 'NR > 1 && $3 ~ /^ *[1-9][0-9]* *$/ { exit 1 }' "$SUMMARY"
