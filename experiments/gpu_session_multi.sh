#!/usr/bin/env bash
# One device call on a 4-GPU machine (nvidia-h200-x4): data-parallel throughput at the Zvuk shape
# (batch 1024, length 128, hidden 256, 1M items, CCE) on 1, 2 and 4 GPUs, then a 100M-item catalog
# trained with vocabulary parallelism on 4 GPUs. JSON + logs under $OUT; a summary table at the end.
# The 100M run uses hidden 128 by default (item table + Adam moments 154 GB, more than one H200's
# 139 GiB; 54 GiB per GPU measured on 4). VP_HIDDEN=256 VP_BATCH=1024 (the full Zvuk shape, 307 GB
# of state) also fits: 110 GiB per GPU measured (docs/distributed.md). VP_ANALYZE=1 prints XLA's
# GPU estimate first.
# Bounded: each run has its own timeout (defaults sum to < 6 minutes of wall time).
#   bash experiments/gpu_session_multi.sh                  # everything
#   DP="1 2" VP= SMOKE= bash experiments/gpu_session_multi.sh   # subsets (empty = skip that step)
set -u
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
# The 100M run needs most of each GPU: let XLA take 95% up front instead of growing on demand.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
PY=${PY:-python3}
DP=${DP-1 2 4}
VP=${VP-4}
{ date -u; nvidia-smi -L; $PY -c "import sys, jax; print(sys.version.split()[0], jax.__version__, jax.devices())"; } 2>&1 | tee "$OUT/env.log"

if [ -n "${SMOKE-1}" ]; then  # Pallas CCE inside shard_map on all GPUs vs one device (~1 min)
  echo "== smoke: vocabulary-parallel Pallas CCE on all GPUs" | tee -a "$OUT/multi.log"
  timeout ${SMOKE_S:-120} $PY tests/distributed/gpu_smoke.py 2>&1 | grep -v -i warn | tail -4 \
    | tee -a "$OUT/multi.log"
fi

for n in $DP; do
  devs=$(seq -s, 0 $((n - 1)))
  echo "== data parallel on $n GPU(s): CUDA_VISIBLE_DEVICES=$devs" | tee -a "$OUT/multi.log"
  CUDA_VISIBLE_DEVICES=$devs timeout ${DP_S:-95} $PY -m experiments.benchmark_multi_gpu --mode dp \
    --items 1000000 --batch 1024 --length 128 --hidden 256 --steps ${DP_STEPS:-8} --budget-s 40 \
    --out "$OUT/dp_${n}gpu.json" ${DP_ARGS:-} 2>&1 | grep -v -i warn | tail -3 | tee -a "$OUT/multi.log"
done

for n in $VP; do
  devs=$(seq -s, 0 $((n - 1)))
  if [ -n "${VP_ANALYZE:-}" ]; then  # compile only: XLA's per-GPU memory estimate for this shape
    CUDA_VISIBLE_DEVICES=$devs timeout ${VP_S:-150} $PY -m experiments.benchmark_multi_gpu --mode vp \
      --items ${VP_ITEMS:-100000000} --batch ${VP_BATCH:-256} --length 128 --hidden ${VP_HIDDEN:-128} \
      --analyze ${VP_ARGS:-} 2>&1 | grep -v -i warn | tail -1 | tee -a "$OUT/multi.log"
  fi
  echo "== vocabulary parallel, 100M items on $n GPU(s)" | tee -a "$OUT/multi.log"
  CUDA_VISIBLE_DEVICES=$devs timeout ${VP_S:-150} $PY -m experiments.benchmark_multi_gpu --mode vp \
    --items ${VP_ITEMS:-100000000} --batch ${VP_BATCH:-256} --length 128 --hidden ${VP_HIDDEN:-128} \
    --steps ${VP_STEPS:-3} --budget-s 60 --out "$OUT/vp_${n}gpu.json" ${VP_ARGS:-} 2>&1 \
    | grep -v -i warn | tail -3 | tee -a "$OUT/multi.log"
done

if [ -n "${TRAIN-1}" ] && [ -d "${DATA_DIR:-.data_carry}" ]; then  # the trainer's default mesh
  echo "== experiments.train, default config.mesh (all GPUs on data), Sports CCE, ${TRAIN_S:-45} s" \
    | tee -a "$OUT/multi.log"
  DATA_DIR=${DATA_DIR:-.data_carry} XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 timeout ${TRAIN_TIMEOUT_S:-130} \
    $PY -m experiments.train --config configs/amazon_sports_cce.py --workdir /tmp/train_mesh \
    --config.data.cache_dir=/tmp/train_mesh_cache --config.train.max_train_seconds=${TRAIN_S:-45} \
    > "$OUT/train_mesh.log" 2>&1
  echo "train rc=$?" | tee -a "$OUT/multi.log"
  grep -E "mesh|epoch [0-9]|results in|test" "$OUT/train_mesh.log" | grep -v -i warn \
    | tail -8 | cut -c1-300 | tee -a "$OUT/multi.log"
fi

$PY - "$OUT" <<'PYEOF' | tee "$OUT/summary.md"
import glob, json, os, sys
rows = []
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*gpu.json"))):
    rows += json.load(open(path))["rows"]
base = {r["items"]: r["tokens_per_s"] for r in rows if r["mode"] == "dp" and r["devices"] == 1}
print("| mode | GPUs | mesh | items | batch | ms/step | tokens/s | speedup vs 1 | peak GiB/GPU | loss first -> last |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    b = base.get(r["items"])
    sp = f"{r['tokens_per_s'] / b:.2f}x" if (b and r["mode"] == "dp") else "-"
    peak = max([p for p in r["peak_bytes"] if p] or [0]) / 2**30
    print(f"| {r['mode']} | {r['devices']} | {r['mesh']} | {r['items']:,} | {r['batch']} | "
          f"{r['ms_per_step']:.1f} | {r['tokens_per_s']:,.0f} | {sp} | {peak:.1f} | "
          f"{r['loss_first']:.3f} -> {r['loss_last']:.3f} |")
PYEOF
