# Sourced by the GPU session scripts (gpu_session_lead / quality / bert4rec.sh). Expects W (work
# folder), T (training budget, s), SLACK (s beyond T before the run is killed) and PY.

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
