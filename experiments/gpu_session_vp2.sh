#!/usr/bin/env bash
# One device call on a 2-GPU machine (nvidia-h200-x2) for the last parts of issue 8:
#  1. gpu-marked tests of the per-shard CCE- Pallas kernels (one GPU, 1x1 mesh);
#  2. the input lookup from a vocab-sharded table, XLA's gather vs shard_map, alone
#     (experiments/benchmark_lookup.py) and inside the sharded SASRec CCE step at the Zvuk shape;
#  3. vocabulary-parallel CCE- with the per-shard Pallas kernels vs the per-shard XLA path.
# JSON + logs under $OUT; a summary of the train-step rows at the end. Each step has a timeout.
#   bash experiments/gpu_session_vp2.sh
set -u
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
PY=${PY:-python3}
{ date -u; nvidia-smi -L; $PY -c "import sys, jax; print(sys.version.split()[0], jax.__version__, jax.devices())"; } 2>&1 | tee "$OUT/env.log"

if [ -n "${TESTS-1}" ]; then
  CUDA_VISIBLE_DEVICES=0 timeout ${TEST_S:-150} $PY -m pytest -q -rA -m gpu -p no:cacheprovider \
    tests/kernels/test_vocab_parallel_cce_neg.py 2>&1 | grep -v Warning | tee "$OUT/gpu_tests.log" | tail -8
fi

if [ -n "${LOOKUP-1}" ]; then
  echo "== lookup alone: data 1 x vocab 2" | tee -a "$OUT/vp2.log"
  timeout ${LOOKUP_S:-90} $PY -m experiments.benchmark_lookup --vocab 2 --out "$OUT/lookup_2gpu.json" 2>&1 \
    | grep -v -i warn | tail -8 | tee -a "$OUT/vp2.log"
  for lk in xla shard_map; do
    echo "== SASRec CCE step, 1M items, Zvuk shape, vocab 2, lookup $lk" | tee -a "$OUT/vp2.log"
    XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 timeout ${STEP_S:-120} $PY -m experiments.benchmark_multi_gpu \
      --mode vp --vocab 2 --lookup $lk --steps 8 --budget-s 30 --out "$OUT/step_lookup_${lk}.json" 2>&1 \
      | grep -v -i warn | tail -2 | tee -a "$OUT/vp2.log"
  done
fi

if [ -n "${CCE_NEG-1}" ]; then
  for impl in pallas xla; do
    echo "== SASRec CCE- step (2047 negatives), 10M items, vocab 2, impl $impl" | tee -a "$OUT/vp2.log"
    XLA_PYTHON_CLIENT_MEM_FRACTION=0.95 timeout ${STEP_S:-120} $PY -m experiments.benchmark_multi_gpu \
      --mode vp --vocab 2 --loss cce_neg --num-negatives 2047 --items 10000000 --batch 256 --length 128 \
      --hidden 128 --steps 8 --budget-s 40 --impl $impl --out "$OUT/step_cce_neg_${impl}.json" 2>&1 \
      | grep -v -i warn | tail -2 | tee -a "$OUT/vp2.log"
  done
fi

$PY - "$OUT" <<'PYEOF' | tee "$OUT/summary.md"
import glob, json, os, sys
print("| file | loss | impl | lookup | mesh | items | batch | ms/step | peak GiB/GPU | loss first -> last |")
print("|---|---|---|---|---|---|---|---|---|---|")
for path in sorted(glob.glob(os.path.join(sys.argv[1], "step_*.json"))):
    for r in json.load(open(path))["rows"]:
        peak = max([p for p in r.get("peak_bytes", []) if p] or [0]) / 2**30
        print(f"| {os.path.basename(path)} | {r.get('loss')} | {r.get('impl')} | {r.get('lookup')} | "
              f"{r['mesh']} | {r['items']:,} | {r['batch']} | {r['ms_per_step']:.1f} | {peak:.1f} | "
              f"{r['loss_first']:.3f} -> {r['loss_last']:.3f} |")
PYEOF
