#!/usr/bin/env bash
# One single-GPU device call: SASRec CCE- (row sharing, uniform, 511 negatives) on the two shared
# Amazon sets with the kernel options of issue 5, all runs at once on the one GPU, each with a
# TRAIN_S training budget: the defaults, bf16 dC accumulation, and the permutation row sampler.
#   DATA_DIR=.data_carry TRAIN_S=290 bash experiments/gpu_session_cce_neg_variants.sh
# Epoch times are not comparable across runs (the GPU is shared); quality is.
set -u
. "$(dirname "$0")/gpu_session_lib.sh"
session_setup /tmp/quality 290 150  # work folder, training budget, slack (s)

for data in sports games; do
  run "${data}_cce_neg_row_default" "configs/amazon_${data}_cce_neg.py" &
  run "${data}_cce_neg_row_bf16_dc" "configs/amazon_${data}_cce_neg.py" \
    --config.loss.dc_accum=bfloat16 &
  run "${data}_cce_neg_row_permutation" "configs/amazon_${data}_cce_neg.py" \
    --config.loss.row_sampling=permutation &
done
wait

$PY -m experiments.run_table "$W"
show_failed_runs
date -u
