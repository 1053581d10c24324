#!/usr/bin/env bash
# One single-GPU device call: training-quality runs on the two shared Amazon sets, all at once on
# the one GPU (each with a TRAIN_S training budget): SASRec CCE- for sharing row / block / batch x
# uniform / popularity sampler (issue 5), and BERT4Rec with full CE (issue 6). Prints one table.
#   DATA_DIR=.data_carry TRAIN_S=300 bash experiments/gpu_session_quality.sh
# Epoch times are not comparable across runs (the GPU is shared); quality is.
set -u
. "$(dirname "$0")/gpu_session_lib.sh"
session_setup /tmp/quality 300 150  # work folder, training budget, slack (s)

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

$PY -m experiments.run_table "$W"
show_failed_runs
grep -h "epoch" "$W"/logs/*bert4rec*.log | grep -v -i warn | tail -n 6 | cut -c1-200
date -u
