#!/usr/bin/env bash
# Catalog-scale study on one GPU (the device machine): CE, CE-, CCE, CCE- at the reference's Zvuk
# shape (batch 1024, length 128, hidden 256, 2047 negatives) for 1e4, 1e5, 1e6, 1e7 items.
#
#   bash experiments/gpu_session_catalog.sh            # writes $OUT/catalog_scale.json, report, log
#
# Budget: < 8 minutes on an H100. One process per loss (clean peak memory), one compile and
# 1 + 3 steps per point; a loss that runs out of memory skips its larger catalogs, and no new
# point starts after CATALOG_BUDGET_S seconds (default 390). Expects polars / ml_collections /
# tensorboardX wheels installed to /tmp/site (the lead's command prefix); matplotlib is in the
# device image. Then, here: python -m experiments.report --out docs/figures <the JSON>.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d /tmp/site ]; then export PYTHONPATH="$PYTHONPATH:/tmp/site"; fi
export PYTHONUNBUFFERED=1
# Grow the pool on demand (peak_bytes_in_use is what the steps allocate) and allow 95% of the
# card, so that the 10M-item CCE point has the whole GPU.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}"
OUT="${OUT:-results/catalog_gpu}"
mkdir -p "$OUT"
# Files under $OUT (7): catalog_scale.json, catalog_scale.log (GPU line first), report/{report.md,
# catalog.md, catalog.csv, memory_vs_catalog.png, step_time_vs_catalog.png}.
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true; } \
  | tee "$OUT/catalog_scale.log"

# CCE first: if the budget runs out, the points left are CE ones that run out of memory anyway.
python -m experiments.catalog_scale --out "$OUT/catalog_scale.json" --losses=cce,cce_neg,ce,ce_neg \
  --steps 3 --warmup 1 --time_budget_s "${CATALOG_BUDGET_S:-390}" "$@" 2>&1 \
  | { grep -v -E '^[IW][0-9]{4} ' || true; } | tee -a "$OUT/catalog_scale.log"

if python -c "import matplotlib" 2>/dev/null; then
  python -m experiments.report --out "$OUT/report" "$OUT/catalog_scale.json" 2>&1 | tail -n 40
else
  echo "matplotlib missing here: run python -m experiments.report --out DIR $OUT/catalog_scale.json"
fi
