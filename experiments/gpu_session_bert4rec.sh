#!/usr/bin/env bash
# One single-GPU device call: BERT4Rec on the shared Amazon sets with a long budget (CE on both,
# CCE and CCE- on Sports), in the background, while the large-catalog CCE GPU test runs.
#   DATA_DIR=.data_carry TRAIN_S=400 bash experiments/gpu_session_bert4rec.sh
set -u
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false DATA_DIR=${DATA_DIR:-.data_carry}
W=${WORK:-/tmp/bert}; T=${TRAIN_S:-400}; mkdir -p "$W/logs"
PY=${PY:-python3}
date -u; nvidia-smi -L 2>/dev/null
run() {  # name, config file, overrides...
  local name=$1 cfg=$2; shift 2
  timeout $((T + 100)) $PY -m experiments.train --config "$cfg" --workdir "$W/$name" \
    --config.data.cache_dir="$W/cache_$name" --config.train.max_train_seconds="$T" "$@" \
    > "$W/logs/$name.log" 2>&1
  echo "$name rc=$?"
}
run sports_bert4rec_ce configs/amazon_sports_bert4rec_ce.py &
run games_bert4rec_ce configs/amazon_games_bert4rec_ce.py &
run sports_bert4rec_cce configs/amazon_sports_bert4rec_ce.py --config.loss.type=cce &
run sports_bert4rec_cce_neg configs/amazon_sports_bert4rec_ce.py --config.loss.type=cce_neg \
  --config.loss.num_negatives=511 &
if [ -n "${TEST-1}" ]; then
  timeout 200 $PY -m pytest -q -rf -s -m gpu tests/kernels/test_cce.py -k 32_bit -p no:cacheprovider \
    2>&1 | grep -E "per impl|passed|failed|Error" | cut -c1-600
fi
wait
$PY - "$W" <<'PY'
import json, os, sys
w = sys.argv[1]
print("| run | test NDCG@10 | HR@10 | Cov@10 | epochs (best) | stop | epoch s | peak GiB |")
print("|---|---|---|---|---|---|---|---|")
for name in sorted(os.listdir(w)):
    p = os.path.join(w, name, "results.json")
    if os.path.exists(p):
        r = json.load(open(p)); t = r["test"]; peak = r.get("peak_memory_bytes")
        print(f"| {name} | {t['ndcg@10']:.4f} | {t['hitrate@10']:.4f} | {t.get('coverage@10', 0):.4f} | "
              f"{r['epochs_run']} ({r['best_epoch']}) | {r['stopped']} | {r['epoch_time_s']:.2f} | "
              f"{None if peak is None else round(peak / 2**30, 2)} |")
PY
for f in "$W"/logs/*.log; do grep -q "results in" "$f" || { echo "== $f"; tail -n 4 "$f"; }; done
date -u
