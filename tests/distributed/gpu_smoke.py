"""GPU smoke check of the vocabulary-parallel path on the devices this process sees (not pytest).

  python tests/distributed/gpu_smoke.py [--bench]
  XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/distributed/gpu_smoke.py --cpu

1. ``linear_cross_entropy(impl="pallas", vocab_parallel=...)`` on a (1 data x n vocab) mesh
   against the single-device ``linear_cross_entropy`` (Pallas): loss, dE, dC (bf16).
2. ``--bench``: the multi-GPU benchmark's data-parallel row at a reduced shape.
``--cpu``: tiny shapes with the Pallas interpreter (checks the script itself on CPU).
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import pallas_kernels  # noqa: E402
from experiments import benchmark_multi_gpu as bench  # noqa: E402
from srs_jax import parallel  # noqa: E402
from srs_jax.config import MeshSpec  # noqa: E402


def main(argv):
    n_dev = len(jax.devices())
    mesh = parallel.make_mesh(MeshSpec(data=1, vocab=n_dev))
    rng = np.random.default_rng(0)
    cpu = "--cpu" in argv
    n, d, v = (64, 16, 1003) if cpu else (4096, 128, 100_003)
    rows = -(-(v + 1) // (8 * n_dev)) * 8 * n_dev
    e = jnp.asarray(rng.normal(size=(n, d)) * 0.5, jnp.bfloat16)
    tab = np.zeros((rows, d), np.float32)
    tab[1:v + 1] = rng.normal(size=(v, d)) * 0.5
    tab = jnp.asarray(tab)
    t = jnp.asarray(rng.integers(0, v, n), jnp.int32)
    w = jnp.asarray(rng.random(n) > 0.1)

    impl = "interpret" if cpu else "pallas"

    def f_vp(e, tab):
        return pallas_kernels.linear_cross_entropy(
            e, tab, t, where=w, impl=impl,
            vocab_parallel=pallas_kernels.VocabParallelOptions(mesh, col_start=1, num_classes=v))

    def f_ref(e, tab):
        return pallas_kernels.linear_cross_entropy(e, tab[1:v + 1], t, where=w, impl=impl)

    out = {}
    for name, f in (("vp", f_vp), ("single", f_ref)):
        g = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))
        t0 = time.perf_counter()
        res = jax.block_until_ready(g(e, tab))
        t1 = time.perf_counter()
        res = jax.block_until_ready(g(e, tab))
        out[name] = res
        print(f"{name}: compile+run {t1 - t0:.2f}s, run {time.perf_counter() - t1:.4f}s", flush=True)
    (la, (dea, dca)), (lb, (deb, dcb)) = out["vp"], out["single"]
    dea, deb = np.asarray(dea, np.float32), np.asarray(deb, np.float32)
    dca, dcb = np.asarray(dca), np.asarray(dcb)
    print("loss", float(la), float(lb), "dE max diff", np.abs(dea - deb).max(), "scale",
          np.abs(deb).max(), "dC max diff", np.abs(dca - dcb).max(), "scale", np.abs(dcb).max(),
          "excluded rows grad", np.abs(dca[0]).max(), np.abs(dca[v + 1:]).max(initial=0.0))
    assert abs(float(la) - float(lb)) < 1e-3 * abs(float(lb))
    assert np.abs(dea - deb).max() < 2e-2 * np.abs(deb).max() + 1e-6
    assert np.abs(dca - dcb).max() < 2e-2 * np.abs(dcb).max() + 1e-6
    print("OK vocab-parallel pallas on", n_dev, "device(s)", flush=True)
    if "--bench" in argv:
        bench.main(["--mode", "dp", "--items", "1000000", "--batch", "256", "--steps", "3",
                    "--out", os.path.join(os.environ.get("OUT", "/tmp"), "smoke_dp.json")])


if __name__ == "__main__":
    main(sys.argv[1:])
