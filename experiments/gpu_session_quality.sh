#!/usr/bin/env bash
# One single-GPU device call: training-quality runs on the two shared Amazon sets, all at once on
# the one GPU (each with a TRAIN_S training budget): SASRec CCE- for sharing row / block / batch x
# uniform / popularity sampler (issue 5), and BERT4Rec with full CE (issue 6). Prints one table.
#   DATA_DIR=.data_carry TRAIN_S=300 bash experiments/gpu_session_quality.sh
# Epoch times are not comparable across runs (the GPU is shared); quality is.
set -u
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false DATA_DIR=${DATA_DIR:-.data_carry}
W=${WORK:-/tmp/quality}; T=${TRAIN_S:-300}; mkdir -p "$W/logs"
PY=${PY:-python3}
date -u; nvidia-smi -L 2>/dev/null

run() {  # name, config file, overrides...
  local name=$1 cfg=$2; shift 2
  timeout $((T + 150)) $PY -m experiments.train --config "$cfg" --workdir "$W/$name" \
    --config.data.cache_dir="$W/cache_$name" --config.train.max_train_seconds="$T" "$@" \
    > "$W/logs/$name.log" 2>&1
  echo "$name rc=$?"
}

for data in sports games; do
  for sharing in ${SHARINGS:-row block batch}; do
    for sampler in ${SAMPLERS:-uniform popularity}; do
      run "${data}_cce_neg_${sharing}_${sampler}" "configs/amazon_${data}_cce_neg.py" \
        --config.loss.sharing=$sharing --config.loss.sampler=$sampler &
    done
  done
  [ -n "${BERT-1}" ] && run "${data}_bert4rec_ce" "configs/amazon_${data}_bert4rec_ce.py" &
done
wait

$PY - "$W" <<'PY'
import json, os, sys
w = sys.argv[1]
print("| run | test NDCG@10 | HR@10 | Cov@10 | epochs (best) | stop | epoch s | peak GiB |")
print("|---|---|---|---|---|---|---|---|")
for name in sorted(os.listdir(w)):
    p = os.path.join(w, name, "results.json")
    if not os.path.exists(p):
        continue
    r = json.load(open(p)); t = r["test"]
    peak = r.get("peak_memory_bytes")
    print(f"| {name} | {t['ndcg@10']:.4f} | {t['hitrate@10']:.4f} | {t.get('coverage@10', 0):.4f} | "
          f"{r['epochs_run']} ({r['best_epoch']}) | {r['stopped']} | "
          f"{r['epoch_time_s']:.2f} | {None if peak is None else round(peak / 2**30, 2)} |")
PY
for f in "$W"/logs/*.log; do grep -q "results in" "$f" || { echo "== $f"; tail -n 4 "$f"; }; done
grep -h "epoch" "$W"/logs/*bert4rec*.log | grep -v -i warn | tail -n 6 | cut -c1-200
date -u
