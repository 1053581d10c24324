#!/usr/bin/env bash
# One GPU session for the trainer (issue 3 quality, issue 7 profiling), < 8 minutes on one H100.
#
#   OUT=/path/to/out DATA_DIR=.data_carry bash experiments/gpu_session_train.sh
#
# 1. Quality: SASRec with full CE, CCE and CCE- on the two leave-one-out Amazon sets (6 runs in
#    parallel on the one GPU, each with a training-time budget; early stopping may end them first).
# 2. CE vs CCE (and CCE-) at a larger shape on Games: peak memory and epoch time, one run at a time.
# 3. Host overhead: experiments.benchmark_loop (loop vs bare jitted step, target ratio >= 0.95).
# Everything lands in $OUT: logs/, runs/<name>/{results.json,metrics.jsonl,config.json},
# summary.md (tables), env.txt. Checkpoints stay in $WORK (not copied back).
set -uo pipefail

OUT=${OUT:?set OUT to the output folder}
export DATA_DIR=${DATA_DIR:-.data_carry}
export PYTHONPATH="/tmp/site:${PWD}:${PYTHONPATH:-}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # several runs share the GPU in phase 1
WORK=${WORK:-/tmp/srs_train_work}
mkdir -p "$OUT/logs" "$OUT/runs" "$WORK"
T0=$(date +%s)

{
  date -u; git rev-parse HEAD 2>/dev/null; nvidia-smi --query-gpu=name,memory.total --format=csv
  python -c "import jax, flax, optax, orbax.checkpoint; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
  ls -l "$DATA_DIR"
} > "$OUT/env.txt" 2>&1

train() {  # name, timeout_s, config file, overrides... (--config must precede --config.x overrides)
  local name=$1 limit=$2 cfg=$3; shift 3
  timeout "$limit" python -m experiments.train --config "$cfg" --workdir "$WORK/$name" \
    --config.data.cache_dir="$WORK/cache_$name" "$@" > "$OUT/logs/$name.log" 2>&1
  echo "$name rc=$?" >> "$OUT/logs/status.txt"
  mkdir -p "$OUT/runs/$name"
  for f in results.json metrics.jsonl config.json; do
    [ -f "$WORK/$name/$f" ] && cp "$WORK/$name/$f" "$OUT/runs/$name/"
  done
}

# --- 1. quality (parallel) ---------------------------------------------------------------------
for ds in amazon_sports amazon_games; do
  for loss in ce cce cce_neg; do
    train "${ds}_${loss}" 240 "configs/${ds}_${loss}.py" --config.train.max_train_seconds=140 &
  done
done
wait
echo "phase 1 done after $(( $(date +%s) - T0 ))s" >> "$OUT/logs/status.txt"

# --- 2. CE vs CCE vs CCE- at a larger shape (sequential: clean memory and time) ---------------
BIG=(--config.model.hidden=256 --config.model.num_heads=2 --config.model.dropout=0.1
     --config.model.max_len=200 --config.train.batch_size=256 --config.train.max_epochs=2
     --config.eval.popularity_baseline=False)
for loss in ce cce cce_neg; do
  train "compare_games_${loss}" 65 "configs/amazon_games_${loss}.py" "${BIG[@]}"
done
echo "phase 2 done after $(( $(date +%s) - T0 ))s" >> "$OUT/logs/status.txt"

# --- 3. host overhead --------------------------------------------------------------------------
timeout 40 python -m experiments.benchmark_loop --config configs/amazon_games_cce.py --steps 100 \
  --repeats 3 --config.data.cache_dir="$WORK/cache_bench" --out "$OUT/benchmark_loop.json" \
  > "$OUT/logs/benchmark_loop.log" 2>&1
echo "benchmark_loop rc=$?" >> "$OUT/logs/status.txt"

# --- summary -----------------------------------------------------------------------------------
python - "$OUT" > "$OUT/summary.md" 2>> "$OUT/logs/status.txt" <<'PY'
import json, os, sys
out = sys.argv[1]
def fmt(x, p=4):
    return "-" if x is None else (f"{x:.{p}f}" if isinstance(x, float) else str(x))
print("| run | loss | test NDCG@10 | HR@10 | Cov@10 | Surp@10 | pop. NDCG@10 | epochs (best) | stop | epoch s | train epoch s | peak GiB (train) | steps/s | tokens/s |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for name in sorted(os.listdir(os.path.join(out, "runs"))):
    path = os.path.join(out, "runs", name, "results.json")
    if not os.path.exists(path):
        print(f"| {name} | no results.json (see logs/{name}.log) |")
        continue
    r = json.load(open(path)); t = r["test"]
    cfg = json.load(open(os.path.join(out, "runs", name, "config.json")))
    pop = r.get("popularity", {}).get("test", {}).get("ndcg@10")
    gib = lambda b: None if b is None else b / 2**30
    print(f"| {name} | {cfg['loss']['type']} | {fmt(t['ndcg@10'])} | {fmt(t['hitrate@10'])} | "
          f"{fmt(t.get('coverage@10'))} | {fmt(t.get('surprisal@10'))} | {fmt(pop)} | "
          f"{r['epochs_run']} ({r['best_epoch']}) | {r['stopped']} | {fmt(r['epoch_time_s'], 2)} | "
          f"{fmt(r['epoch_train_time_s'], 2)} | {fmt(gib(r['peak_memory_bytes']), 2)} "
          f"({fmt(gib(r['peak_memory_train_bytes']), 2)}) | {fmt(r['steps_per_s'], 1)} | {fmt(r['tokens_per_s'], 0)} |")
bench = os.path.join(out, "benchmark_loop.json")
if os.path.exists(bench):
    print("\nbenchmark_loop:", open(bench).read().strip())
PY
echo "total $(( $(date +%s) - T0 ))s" >> "$OUT/logs/status.txt"
cat "$OUT/summary.md" "$OUT/logs/status.txt"
