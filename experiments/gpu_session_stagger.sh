#!/usr/bin/env bash
# Device call (nvidia-h100-x1): do the CCE kernels' programs on one SM overlap their GEMM and
# exponential phases? Step RES: registers / spills / SASS mix per kernel (kernel_resources.py).
# Step PARTS: each kernel alone with KernelConfig.stagger variants (common.stagger_trips), per D
# in DS. Step CHECK: staggered kernels give bitwise the same results as the defaults.
#   DS="64 128 256" bash experiments/gpu_session_stagger.sh
set -u
. "$(dirname "$0")/gpu_session_lib.sh"
kernel_session_setup

if [ -n "${RES-1}" ]; then
  timeout ${RES_S:-300} $PY -m experiments.kernel_resources --d ${DS:-64 128 256} \
    --sass-out "$OUT/sass.txt" 2>&1 | grep -v -i warn | tee "$OUT/resources.log" | grep -v compiled
fi

if [ -n "${CHECK-1}" ]; then
  timeout 200 $PY - <<'PY' 2>&1 | grep -v -i warn | tee "$OUT/stagger_check.log"
import jax, jax.numpy as jnp, numpy as np
from experiments.benchmark_cce_parts import parts
from experiments.benchmark_loss import make_inputs
from pallas_kernels.cce.common import KernelConfig
for d in (64, 128, 256):
    e, c, t = make_inputs(4096, 300_017, d, jnp.bfloat16)
    base = {k: jax.jit(f)(e, c, t) for k, f in parts(e, c, t, KernelConfig(), False).items()
            if k != "de_and_dc_kernels"}
    for spec in ("parity:1", "wave:2:1", "mod:3:2"):
        got = {k: jax.jit(f)(e, c, t) for k, f in
               parts(e, c, t, KernelConfig(stagger=spec), False).items() if k != "de_and_dc_kernels"}
        same = {k: all(bool(jnp.array_equal(a, b)) for a, b in zip(jax.tree.leaves(base[k]),
                                                                    jax.tree.leaves(got[k])))
                for k in base}
        print("check", d, spec, same, flush=True)
PY
fi

if [ -n "${PARTS-1}" ]; then
  VARIANTS=${VARIANTS:-'{"default": {}, "parity1": {"stagger": "parity:1"}, "mod2": {"stagger": "mod:2:1"}, "wave2": {"stagger": "wave:2:1"}, "wave3": {"stagger": "wave:3:1"}}'}
  for d in ${DS:-64 128 256}; do
    timeout ${PARTS_S:-240} $PY -m experiments.benchmark_cce_parts --d $d --reps 5 \
      --variants "$VARIANTS" --parts ${PARTS_ONLY:-lse_fwd fused_fwd dc_kernel} \
      --out "$OUT/stagger_d$d.json" 2>&1 | grep -v -i warn | tee -a "$OUT/stagger.log"
  done
fi
(cd "$OUT" && [ -f sass.txt ] && gzip -f sass.txt)

# Step NCU: Nsight Compute on one launch of each kernel in NCU_PARTS per D (needs ncu on PATH or
# in /usr/local/cuda/bin): occupancy, issue-slot use, pipe utilisation (XU = MUFU, tensor).
if [ -n "${NCU-}" ]; then
  NCU_BIN=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  for d in ${DS:-64 128 256}; do
    for part in ${NCU_PARTS:-lse_fwd}; do
      timeout ${NCU_S:-240} $NCU_BIN -k "regex:${NCU_KERNEL:-cce_}" --launch-skip 1 --launch-count 1 \
        --section SpeedOfLight --section Occupancy --section LaunchStats \
        --section ComputeWorkloadAnalysis --section SchedulerStats --section WarpStateStats \
        --metrics sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_issued.avg.pct_of_peak_sustained_active,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active \
        $PY -m experiments.benchmark_cce_parts --d $d --reps 1 --parts $part \
        ${NCU_VARIANTS:+--variants "$NCU_VARIANTS"} > "$OUT/ncu_${part}_d$d.log" 2>&1
      echo "ncu $part d=$d rc=$?"
    done
  done
fi
