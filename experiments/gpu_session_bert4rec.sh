#!/usr/bin/env bash
# One single-GPU device call: BERT4Rec on the shared Amazon sets with a long budget (CE on both,
# CCE and CCE- on Sports), in the background, while the large-catalog CCE GPU test runs.
#   DATA_DIR=.data_carry TRAIN_S=400 bash experiments/gpu_session_bert4rec.sh
set -u
. "$(dirname "$0")/gpu_session_lib.sh"
session_setup /tmp/bert 400 100  # work folder, training budget, slack (s)
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
$PY -m experiments.run_table "$W"
show_failed_runs
date -u
