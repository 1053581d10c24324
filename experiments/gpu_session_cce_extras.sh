#!/usr/bin/env bash
# One device call for the CCE options whose GPU speed was never measured: the gpu-marked tests
# of gradient filtering, filtering's speed on fresh-model inputs (filter_eps None / 2^-12 / 1e-3),
# and the forward's catalog split for small N (default splits vs one split). Logs under $OUT.
#   bash experiments/gpu_session_cce_extras.sh
set -u
. "$(dirname "$0")/gpu_session_lib.sh"
kernel_session_setup
timeout ${TEST_S:-200} $PY -m pytest -q -rA -m gpu -p no:cacheprovider tests/kernels/test_cce_filter.py 2>&1 \
  | grep -v Warning | tee "$OUT/gpu_tests_filter.log" | tail -6
# Filtering at the issue's shape (D = 128), fresh-model inputs (every probability ~1/V).
timeout ${FILTER_S:-150} $PY - <<'PYEOF' 2>&1 | grep -v -i warn | tee "$OUT/filter_speed.log"
import jax, jax.numpy as jnp
from experiments.benchmark_loss import make_inputs, median_ms
from pallas_kernels import linear_cross_entropy
n, v, d = 131072, 1_000_000, 128
e, c, t = make_inputs(n, v, d, jnp.bfloat16)
print(f"N={n} V={v} D={d} bf16, {jax.devices()[0].device_kind}")
for eps in (None, 2.0**-12, 1e-3):
    f = jax.jit(jax.value_and_grad(lambda e_, c_, t_: linear_cross_entropy(
        e_, c_, t_, impl="pallas", filter_eps=eps), (0, 1)))
    print("filter_eps", eps, "fwd+bwd median ms", round(median_ms(f, (e, c, t), 3)[0], 1), flush=True)
PYEOF
# Catalog split of the forward for small N: defaults (num_splits from N) vs one split.
for n in 2048 8192; do
  timeout ${SPLIT_S:-120} $PY -m experiments.benchmark_loss --n $n --d 128 --reps 5 \
    --variants '{"default": {}, "one_split": {"num_splits": 1}}' --out "$OUT/splits_n$n.json" 2>&1 \
    | grep -v -i warn | tail -3 | tee -a "$OUT/splits.log"
done
