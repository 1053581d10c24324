# Sourced by the GPU session scripts: the kernel ones call kernel_session_setup, the training-run
# ones (gpu_session_lead / quality / bert4rec / cce_neg_variants.sh, fused.sh's TRAIN step)
# session_setup, then run.

kernel_session_setup() {  # sets OUT (default /tmp/out, created) and PY; appends to $OUT/env.log
  export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
  OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
  PY=${PY:-python3}
  { date -u; nvidia-smi -L; $PY -c "import sys, jax; print(sys.version.split()[0], jax.__version__, jax.devices())"; } 2>&1 | tee -a "$OUT/env.log"
}

session_setup() {  # default work folder, default training budget (s), slack (s) beyond it
  # Sets W (WORK overrides), T (TRAIN_S overrides), SLACK (before a run is killed) and PY.
  export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false DATA_DIR=${DATA_DIR:-.data_carry}
  W=${WORK:-$1}; T=${TRAIN_S:-$2}; SLACK=$3; mkdir -p "$W/logs"
  PY=${PY:-python3}
  date -u; nvidia-smi -L 2>/dev/null
}

run() {  # name, config file, overrides... (--config must precede the --config.x overrides)
  local name=$1 cfg=$2; shift 2
  timeout $((T + SLACK)) $PY -m experiments.train --config "$cfg" --workdir "$W/$name" \
    --config.data.cache_dir="$W/cache_$name" --config.train.max_train_seconds="$T" "$@" \
    > "$W/logs/$name.log" 2>&1
  echo "$name rc=$?"
}

show_failed_runs() {  # the log tail of every run that did not finish
  for f in "$W"/logs/*.log; do grep -q "results in" "$f" || { echo "== $f"; tail -n 4 "$f"; }; done
}
