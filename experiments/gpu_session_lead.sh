#!/usr/bin/env bash
# One compact GPU call: quality runs (SASRec CE / CCE / CCE- and BERT4Rec CE on the shared Amazon
# sets, in parallel on one GPU, each with a TRAIN_S training budget), then catalog-scale points for
# CE and CCE at the Zvuk shape. Prints compact tables to stdout (nothing needs to come back in files).
#   DATA_DIR=.data_carry TRAIN_S=150 bash experiments/gpu_session_lead.sh
set -u
. "$(dirname "$0")/gpu_session_lib.sh"
session_setup /tmp/lead 150 120  # work folder, training budget, slack (s)

for loss in ce cce cce_neg; do run "sports_$loss" "configs/amazon_sports_$loss.py" & done
for loss in ce cce; do run "games_$loss" "configs/amazon_games_$loss.py" & done
run sports_bert4rec_ce configs/amazon_sports_bert4rec_ce.py &
wait

$PY -m experiments.run_table "$W" --popularity
show_failed_runs

timeout ${CATALOG_S:-170} $PY -m experiments.catalog_scale --out "$W/catalog.json" --losses=cce,ce \
  --catalogs=${CATALOGS:-1e5,1e6,1e7} --steps 3 --warmup 1 --time_budget_s ${CATALOG_BUDGET_S:-110} \
  ${CATALOG_ARGS:-} > "$W/logs/catalog.log" 2>&1
echo "catalog rc=$?"
$PY -c "import json,sys; d=json.load(open(sys.argv[1])); [print(json.dumps(p)) for p in d.get('points', d if isinstance(d, list) else [])]" "$W/catalog.json" 2>&1 | cut -c1-400
tail -n 5 "$W/logs/catalog.log"
date -u
