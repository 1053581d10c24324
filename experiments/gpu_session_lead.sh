#!/usr/bin/env bash
# One compact GPU call: quality runs (SASRec CE / CCE / CCE- and BERT4Rec CE on the shared Amazon
# sets, in parallel on one GPU, each with a TRAIN_S training budget), then catalog-scale points for
# CE and CCE at the Zvuk shape. Prints compact tables to stdout (nothing needs to come back in files).
#   DATA_DIR=.data_carry TRAIN_S=150 bash experiments/gpu_session_lead.sh
set -u
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false DATA_DIR=${DATA_DIR:-.data_carry}
W=${WORK:-/tmp/lead}; T=${TRAIN_S:-150}; mkdir -p "$W/logs"
PY=${PY:-python3}
date -u; nvidia-smi -L 2>/dev/null

run() {  # name, config file, overrides...
  local name=$1 cfg=$2; shift 2
  timeout $((T + 120)) $PY -m experiments.train --config "$cfg" --workdir "$W/$name" \
    --config.data.cache_dir="$W/cache_$name" --config.train.max_train_seconds="$T" "$@" \
    > "$W/logs/$name.log" 2>&1
  echo "$name rc=$?"
}

for loss in ce cce cce_neg; do run "sports_$loss" "configs/amazon_sports_$loss.py" & done
for loss in ce cce; do run "games_$loss" "configs/amazon_games_$loss.py" & done
run sports_bert4rec_ce configs/amazon_sports_bert4rec_ce.py &
wait

$PY - "$W" <<'PY'
import json, os, sys
w = sys.argv[1]
print("| run | test NDCG@10 | HR@10 | Cov@10 | pop. NDCG@10 | epochs (best) | stop | epoch s | peak GiB |")
print("|---|---|---|---|---|---|---|---|---|")
for name in sorted(os.listdir(w)):
    p = os.path.join(w, name, "results.json")
    if not os.path.exists(p):
        continue
    r = json.load(open(p)); t = r["test"]
    pop = (r.get("popularity") or {}).get("test", {}).get("ndcg@10")
    peak = r.get("peak_memory_bytes")
    print(f"| {name} | {t['ndcg@10']:.4f} | {t['hitrate@10']:.4f} | {t.get('coverage@10', 0):.4f} | "
          f"{pop if pop is None else round(pop, 4)} | {r['epochs_run']} ({r['best_epoch']}) | {r['stopped']} | "
          f"{r['epoch_time_s']:.2f} | {None if peak is None else round(peak / 2**30, 2)} |")
PY
for f in "$W"/logs/*.log; do grep -q "results in" "$f" || { echo "== $f"; tail -n 4 "$f"; }; done

timeout ${CATALOG_S:-170} $PY -m experiments.catalog_scale --out "$W/catalog.json" --losses=cce,ce \
  --catalogs=${CATALOGS:-1e5,1e6,1e7} --steps 3 --warmup 1 --time_budget_s ${CATALOG_BUDGET_S:-110} \
  ${CATALOG_ARGS:-} > "$W/logs/catalog.log" 2>&1
echo "catalog rc=$?"
$PY -c "import json,sys; d=json.load(open(sys.argv[1])); [print(json.dumps(p)) for p in d.get('points', d if isinstance(d, list) else [])]" "$W/catalog.json" 2>&1 | cut -c1-400
tail -n 5 "$W/logs/catalog.log"
date -u
