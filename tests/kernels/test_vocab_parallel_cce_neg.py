"""Per-shard CCE- Pallas kernels of ``vocab_parallel_sampled_cross_entropy`` on one device.

The multi-device comparison (8 forced CPU devices, meshes 1x8 and 2x4, against float64) is
``check_cce_neg_pallas`` in tests/distributed/multidevice_checks.py. Here: the same comparison
on a 1x1 mesh (interpreter on CPU, compiled Triton kernels in the ``gpu`` test), lowering of the
kernels for CUDA without a GPU, and input errors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import vocab_parallel as vp
from pallas_kernels.cce_neg import shard_kernels
from srs_jax import distributed as dist
from tests.kernels.cuda_lowering import lower_for_cuda


def _one_device_mesh():
    return dist.make_mesh({"data": 1, "vocab": 1}, devices=jax.devices()[:1])


def _problem(rng, n, v, d, neg, sampler, pad_rows=3):
    rows = v + 1 + pad_rows  # row 0 and the padding rows behind the items are excluded
    e = (rng.normal(size=(n, d)) * 0.5).astype(np.float32)
    tab = (rng.normal(size=(rows, d)) * 0.5).astype(np.float32)
    t = rng.integers(0, v, n).astype(np.int32)
    t[: n // 8] = t[0]  # repeated targets
    w = rng.random(n) > 0.2
    counts = None
    if sampler == "popularity":
        counts = np.floor(1e4 / np.arange(1, v + 1) ** 1.1) * (rng.random(v) > 0.2)  # Zipf-like
        counts[t] += 1
    st = vp.shard_sampler_tables(rows, 1, neg, col_start=1, num_classes=v, item_counts=counts)
    return e, tab, np.where(w, t, -3).astype(np.int32), w, st


def _compare(n, v, d, neg, sampler, dtype, *, interpret, seed=0, row_block=8):
    """impl='pallas' vs impl='xla' on a 1x1 mesh: per-row losses and gradients of the mean."""
    rng = np.random.default_rng(seed)
    e, tab, t, w, st = _problem(rng, n, v, d, neg, sampler)
    mesh = _one_device_mesh()

    def run(impl):
        def f(e_, tab_, reduction):
            return vp.vocab_parallel_sampled_cross_entropy(
                e_.astype(dtype), tab_, jnp.asarray(t), mesh=mesh, where=jnp.asarray(w),
                col_start=1, num_classes=v, num_negatives=neg, seed=seed + 11, sampler_tables=st,
                reduction=reduction, impl=impl, interpret=interpret, row_block=row_block)

        rows_loss = jax.jit(lambda a, b: f(a, b, "none"))(e, tab)
        grads = jax.jit(jax.grad(lambda a, b: f(a, b, "mean"), argnums=(0, 1)))(e, tab)
        return [np.asarray(x, np.float64) for x in (rows_loss, *grads)]

    # XLA's f32 dots may use TF32 on the GPU; the kernels multiply in full f32.
    with jax.default_matmul_precision("highest"):
        got, want = run("pallas"), run("xla")
    # Per-row losses: a row whose draws differed would be off by far more than rounding.
    np.testing.assert_allclose(got[0], want[0], rtol=2e-5, atol=1e-6, err_msg="row losses")
    assert np.all(got[0][~w] == 0)
    # dE comes back in the compute dtype (bf16: 2^-8 relative rounding of either result).
    de_rtol = 1e-4 if dtype == jnp.float32 else 1e-2
    np.testing.assert_allclose(got[1], want[1], rtol=de_rtol, atol=1e-5 * np.abs(want[1]).max(),
                               err_msg="dE")
    np.testing.assert_allclose(got[2], want[2], rtol=1e-4, atol=1e-5 * np.abs(want[2]).max(),
                               err_msg="dTable")
    assert np.all(got[2][0] == 0) and np.all(got[2][v + 1:] == 0), "excluded rows got a gradient"


@pytest.mark.parametrize("sampler, dtype", [("uniform", jnp.float32),
                                            ("popularity", jnp.bfloat16)])
def test_interpret_matches_xla_one_device(sampler, dtype):
    # 37 rows: not a multiple of the row tile 16.
    _compare(37, 61, 16, 13, sampler, dtype, interpret=True, seed=1, row_block=16)


@pytest.mark.parametrize("sampler", ["uniform", "popularity"])
def test_shard_kernels_lower_for_cuda(sampler):
    # Lowering for CUDA runs the Pallas -> Triton lowering of the kernel bodies (dynamic trip
    # count, scalar loads, masked gathers and atomics) on a machine without a GPU.
    mesh = _one_device_mesh()
    n, d, v = 100, 64, 299
    rows = v + 5
    counts = None if sampler == "uniform" else np.arange(1, v + 1)
    st = vp.shard_sampler_tables(rows, 1, 50, col_start=1, num_classes=v, item_counts=counts)

    def loss(e, tab):
        return vp.vocab_parallel_sampled_cross_entropy(
            e, tab, jnp.zeros((n,), jnp.int32), mesh=mesh, col_start=1, num_classes=v,
            num_negatives=50, seed=jnp.uint32(3), sampler_tables=st, impl="pallas")

    lowered = lower_for_cuda(jax.jit(jax.value_and_grad(loss, (0, 1))).trace(
        jnp.zeros((n, d), jnp.bfloat16), jnp.zeros((rows, d), jnp.float32)))
    text = lowered.as_text()
    assert text.count("__gpu$xla.gpu.triton") == 2  # forward + backward kernel
    assert "cce_neg_shard_fwd" in text and "cce_neg_shard_bwd" in text


def test_input_errors():
    mesh = _one_device_mesh()
    t = jnp.zeros((4,), jnp.int32)
    kw = dict(mesh=mesh, num_negatives=3, seed=0, col_start=1)
    with pytest.raises(ValueError, match="D a power of two"):
        vp.vocab_parallel_sampled_cross_entropy(jnp.zeros((4, 24)), jnp.zeros((10, 24)), t,
                                                impl="pallas", **kw)
    with pytest.raises(ValueError, match="row_block a power of two"):
        vp.vocab_parallel_sampled_cross_entropy(jnp.zeros((4, 16)), jnp.zeros((10, 16)), t,
                                                impl="pallas", row_block=12, **kw)
    with pytest.raises(ValueError, match="impl="):
        vp.vocab_parallel_sampled_cross_entropy(jnp.zeros((4, 16)), jnp.zeros((10, 16)), t,
                                                impl="triton", **kw)
    # auto with a D the kernels cannot take runs the XLA path instead of failing.
    out = vp.vocab_parallel_sampled_cross_entropy(jnp.zeros((4, 24)), jnp.zeros((10, 24)), t,
                                                  impl="auto", **kw)
    assert np.isfinite(float(out))
    with pytest.raises(ValueError, match="power of two"):
        shard_kernels.check_shapes(64, 4)


@pytest.mark.gpu
@pytest.mark.parametrize("sampler", ["uniform", "popularity"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_gpu_pallas_matches_xla_one_device(sampler, dtype):
    # Compiled Triton kernels: ragged N, V > 2^16 (high half of the multiply-shift), vector
    # atomics with duplicate ids (popular items).
    _compare(3001, 100_003, 128, 255, sampler, dtype, interpret=False, seed=2)
