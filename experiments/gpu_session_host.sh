#!/usr/bin/env bash
# One single-GPU device call for what only the device machine can check:
# 1. SUITE=1: the CPU test suite (SUITE_ARGS, default everything not gpu-marked) under that
#    machine's jax 0.11.x and flax, on its CPU (JAX_PLATFORMS=cpu, pytest-xdist workers). CI runs
#    jax 0.10.2, the GPU machine 0.11.x, and the package must work on both. The notebook test needs
#    nbclient / nbformat / ipykernel, which that machine lacks: py3 wheels of them (and of their
#    dependencies it lacks) in .whl/nb/ are put on the path for this step only.
# 2. LOOP=1: host overhead of the trainer on the GPU: experiments.benchmark_loop (the training
#    loop against the bare jitted step on the same batches; target ratio >= 0.95) for each entry
#    of LOOP_CONFIGS: a config name, then benchmark_loop flags joined by '@' (amazon_games_cce@--noflat).
#   DATA_DIR=.data_carry bash experiments/gpu_session_host.sh        # OUT defaults to /tmp/out
# $OUT gets env.log, summary.txt (the suite's tail, one JSON line per loop entry) and logs.tgz.
set -u
. "$(dirname "$0")/gpu_session_lib.sh"
kernel_session_setup
export DATA_DIR=${DATA_DIR:-.data_carry}
SUITE=${SUITE:-1}; LOOP=${LOOP:-1}; SUITE_S=${SUITE_S:-330}
SUITE_ARGS=${SUITE_ARGS:-"-m 'not gpu' -n 14"}
LOOP_STEPS=${LOOP_STEPS:-300}; LOOP_S=${LOOP_S:-90}
LOOP_CONFIGS=${LOOP_CONFIGS:-"amazon_games_cce amazon_games_cce_neg amazon_games_ce amazon_sports_cce"}
L=/tmp/host_logs; rm -rf "$L"; mkdir -p "$L"
SUMMARY="$OUT/summary.txt"; : > "$SUMMARY"

if [ "$SUITE" = 1 ]; then
  NB=/tmp/site_nb
  [ -d "$NB" ] || $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target "$NB" .whl/nb/*.whl > "$L/suite_install.log" 2>&1
  $PY -c "import flax, optax, orbax.checkpoint as o; print('flax', flax.__version__, 'optax', optax.__version__, 'orbax', o.__version__)" | tee -a "$OUT/env.log"
  # The GPU stays idle here.
  eval "PYTHONPATH=\"\$PYTHONPATH:$NB\" JAX_PLATFORMS=cpu timeout $SUITE_S $PY -m pytest -q $SUITE_ARGS \
    -p no:cacheprovider --durations=15 -rfEs" > "$L/suite.log" 2>&1
  echo "suite rc=$?" | tee -a "$SUMMARY"; tail -n 30 "$L/suite.log" | tee -a "$SUMMARY"
fi

if [ "$LOOP" = 1 ]; then
  for entry in $LOOP_CONFIGS; do
    IFS=@ read -r cfg flags <<< "$entry"
    tag=$(echo "$entry" | tr -c 'A-Za-z0-9_\n' '_')
    # shellcheck disable=SC2086
    timeout "$LOOP_S" $PY -m experiments.benchmark_loop --config "configs/$cfg.py" \
      --steps "$LOOP_STEPS" --repeats 3 --config.data.cache_dir=/tmp/loop_cache ${flags//@/ } \
      > "$L/loop_$tag.log" 2>&1
    echo "$entry rc=$? $(tail -n 1 "$L/loop_$tag.log")" | tee -a "$SUMMARY"
  done
fi
tar czf "$OUT/logs.tgz" -C "$L" .
date -u
