"""Vocabulary parallelism (``vocab_parallel=VocabParallelOptions(...)`` of both losses).

One device (1 x 1 mesh): the per-shard CCE- Pallas kernels (interpreter) against the XLA path on
the same draws, their CUDA lowering, input errors, and (``gpu`` marker) the compiled kernels.
Several devices: ``vocab_parallel_checks.py`` runs in ONE subprocess with 8 forced CPU devices
(XLA_FLAGS must be set before jax is imported) against float64 references.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

import pallas_kernels as pk
from pallas_kernels import vocab_parallel as vp
from pallas_kernels.cce_neg import shard
from tests.kernels.cuda_lowering import lower_for_cuda
from tests.multidevice import run_checks

SCRIPT = os.path.join(os.path.dirname(__file__), "vocab_parallel_checks.py")
CHECK_NAMES = ["cce_loss_and_grads", "cce_matches_single_device_loss", "cce_neg_loss_and_grads",
               "cce_neg_pallas", "cce_neg_unbiased", "errors_are_one_line"]


@pytest.fixture(scope="module")
def multidevice_results():
    results, proc = run_checks(SCRIPT, CHECK_NAMES, timeout=1800)
    if not results:
        pytest.fail(f"the multi-device script printed no results:\n{proc.stdout[-2000:]}\n"
                    f"{proc.stderr[-4000:]}")
    return results


@pytest.mark.parametrize("name", CHECK_NAMES)
def test_multidevice(multidevice_results, name):
    r = multidevice_results.get(name)
    assert r is not None, f"check {name} did not run"
    assert r["ok"], r["error"]


def test_checks_cover_all_script_checks():
    text = open(SCRIPT).read()
    names = {line.split("(")[0][len("def check_"):] for line in text.splitlines()
             if line.startswith("def check_")}
    assert names == set(CHECK_NAMES)


# ---------------------------------------------------------------- one device


def _one_device_options(**kw):
    mesh = Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), ("data", "vocab"))
    return pk.VocabParallelOptions(mesh, **kw)


def _problem(rng, n, v, d, sampler, pad_rows=3):
    rows = v + 1 + pad_rows  # row 0 and the padding rows behind the items are excluded
    e = (rng.normal(size=(n, d)) * 0.5).astype(np.float32)
    tab = (rng.normal(size=(rows, d)) * 0.5).astype(np.float32)
    t = rng.integers(0, v, n).astype(np.int32)
    t[: n // 8] = t[0]  # repeated targets
    w = rng.random(n) > 0.2
    table = None
    if sampler == "popularity":
        counts = np.floor(1e4 / np.arange(1, v + 1) ** 1.1) * (rng.random(v) > 0.2)  # Zipf-like
        counts[t] += 1
        table = pk.popularity_table(counts)
    return e, tab, np.where(w, t, -3).astype(np.int32), w, table


def _compare(n, v, d, neg, sampler, dtype, *, impl, seed=0, row_block=8):
    """The Pallas per-shard kernels vs impl='xla' on a 1x1 mesh: per-row losses and gradients
    of the mean."""
    rng = np.random.default_rng(seed)
    e, tab, t, w, table = _problem(rng, n, v, d, sampler)
    opts = _one_device_options(col_start=1, num_classes=v)

    def run(impl_):
        def f(e_, tab_, reduction):
            return pk.sampled_linear_cross_entropy(
                e_.astype(dtype), tab_, jnp.asarray(t), where=jnp.asarray(w), num_negatives=neg,
                seed=seed + 11, sampler=table, reduction=reduction, impl=impl_,
                config=pk.SampledConfig(row_block=row_block), vocab_parallel=opts)

        rows_loss = jax.jit(lambda a, b: f(a, b, "none"))(e, tab)
        grads = jax.jit(jax.grad(lambda a, b: f(a, b, "mean"), argnums=(0, 1)))(e, tab)
        return [np.asarray(x, np.float64) for x in (rows_loss, *grads)]

    # XLA's f32 dots may use TF32 on the GPU; the kernels multiply in full f32.
    with jax.default_matmul_precision("highest"):
        got, want = run(impl), run("xla")
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
    _compare(37, 61, 16, 13, sampler, dtype, impl="interpret", seed=1, row_block=16)


def test_cce_one_device_matches_linear_cross_entropy():
    # The CCE shard runs linear_cross_entropy_fwd / _bwd: against the single-device loss on the
    # class rows, in the interpreter, with masked rows holding garbage labels.
    rng = np.random.default_rng(3)
    v = 45
    e, tab, t, w, _ = _problem(rng, 29, v, 16, "uniform")
    opts = _one_device_options(col_start=1, num_classes=v)
    cfg = pk.CCEConfig(block_n=16, block_v=16)
    f = lambda e_, tab_: pk.linear_cross_entropy(e_, tab_, jnp.asarray(t), where=jnp.asarray(w),
                                                 impl="interpret", config=cfg, vocab_parallel=opts)
    g = lambda e_, c_: pk.linear_cross_entropy(e_, c_, jnp.asarray(t), where=jnp.asarray(w),
                                               impl="interpret", config=cfg)
    loss, (de, dtab) = jax.value_and_grad(f, (0, 1))(jnp.asarray(e), jnp.asarray(tab))
    want, (de_w, dc_w) = jax.value_and_grad(g, (0, 1))(jnp.asarray(e), jnp.asarray(tab[1:v + 1]))
    np.testing.assert_allclose(float(loss), float(want), rtol=2e-6)
    np.testing.assert_allclose(np.asarray(de), np.asarray(de_w), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(dtab)[1:v + 1], np.asarray(dc_w), rtol=1e-5, atol=1e-7)
    assert not np.any(np.asarray(dtab)[0]) and not np.any(np.asarray(dtab)[v + 1:])


@pytest.mark.parametrize("sampler", ["uniform", "popularity"])
def test_shard_kernels_lower_for_cuda(sampler, monkeypatch):
    # Lowering for CUDA runs the Pallas -> Triton lowering of the kernel bodies (dynamic trip
    # count, scalar loads, masked gathers and atomics) on a machine without a GPU.
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")  # let impl="pallas" through
    n, d, v = 100, 64, 299
    rows = v + 5
    table = None if sampler == "uniform" else pk.popularity_table(np.arange(1, v + 1))
    opts = _one_device_options(col_start=1, num_classes=v)

    def loss(e, tab):
        return pk.sampled_linear_cross_entropy(
            e, tab, jnp.zeros((n,), jnp.int32), num_negatives=50, seed=jnp.uint32(3),
            sampler=table, impl="pallas", vocab_parallel=opts)

    lowered = lower_for_cuda(jax.jit(jax.value_and_grad(loss, (0, 1))).trace(
        jnp.zeros((n, d), jnp.bfloat16), jnp.zeros((rows, d), jnp.float32)))
    text = lowered.as_text()
    assert text.count("__gpu$xla.gpu.triton") == 2  # forward + backward kernel
    assert "cce_neg_shard_fwd" in text and "cce_neg_shard_bwd" in text


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shard_sampler_tables(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.choice([1, 2, 4, 8]))
    v = int(rng.integers(2 * k, 200))
    col_start = int(rng.integers(0, 3))
    rows = -(-(v + col_start) // k) * k
    n = int(rng.integers(k, 300))
    counts = rng.integers(0, 5, v) * (rng.random(v) > 0.4)
    counts[0] += 1
    for item_counts in (None, counts):
        st = vp.shard_sampler_tables(rows, k, n, col_start=col_start, num_classes=v,
                                     item_counts=item_counts)
        q = np.zeros(rows)
        q[col_start:col_start + v] = 1.0 / v if item_counts is None else counts / counts.sum()
        pi = q.reshape(k, -1).sum(1)
        np.testing.assert_array_equal(st["n_draws"] > 0, pi > 0)
        assert np.all(np.abs(st["n_draws"] - n * pi) <= 0.5 + (st["n_draws"] == 1))
        # importance weight pi_k / (n_k q_j) of every drawable row
        corr = vp.log_sampling_weight_reference(st, rows, k)
        shard = np.arange(rows) // (rows // k)
        ok = q > 0
        want = np.log(pi[shard[ok]] / (st["n_draws"][shard[ok]] * q[ok]))
        np.testing.assert_allclose(corr[ok], want, rtol=1e-5, atol=1e-5)
        if item_counts is not None:  # per-shard alias tables never pick a zero-probability row
            r = rows // k
            for s in range(k):
                prob, alias = st["prob"][s * r:(s + 1) * r], st["alias"][s * r:(s + 1) * r]
                qs = q[s * r:(s + 1) * r]
                if qs.sum() == 0:
                    continue
                # implied distribution: (prob[c] + sum_{alias[j]=c} (1 - prob[j])) / r
                implied = prob.astype(np.float64).copy()
                np.add.at(implied, alias, 1.0 - prob)
                np.testing.assert_allclose(implied / r, qs / qs.sum(), atol=1e-6)



def test_sampler_tables_come_from_the_popularity_table():
    # Built inside from the static shapes and the table's host counts: the draws of the loss
    # are those of shard_sampler_tables(..., item_counts=counts).
    v, rows = 40, 44
    counts = np.arange(1, v + 1) % 5
    opts = _one_device_options(col_start=1, num_classes=v)
    ids, active = vp.shard_negative_ids(16, rows, options=opts, num_negatives=9, seed=4,
                                        sampler=pk.popularity_table(counts))
    ids, active = np.asarray(ids), np.asarray(active)
    assert ids.shape == (1, 16, 9) and active.all()
    assert np.all(counts[ids - 1] > 0) and ids.min() >= 1 and ids.max() <= v
    st = vp.shard_sampler_tables(rows, 1, 9, col_start=1, num_classes=v, item_counts=counts)
    assert st["n_draws"].tolist() == [9]


def test_input_errors():
    opts = _one_device_options(col_start=1)
    t = jnp.zeros((4,), jnp.int32)
    kw = dict(num_negatives=3, seed=0, vocab_parallel=opts)
    with pytest.raises(ValueError, match="D a power of two"):
        pk.sampled_linear_cross_entropy(jnp.zeros((4, 24)), jnp.zeros((10, 24)), t,
                                        impl="interpret", **kw)
    with pytest.raises(ValueError, match="row_block a power of two"):
        pk.sampled_linear_cross_entropy(jnp.zeros((4, 16)), jnp.zeros((10, 16)), t,
                                        impl="interpret", config=pk.SampledConfig(row_block=12),
                                        **kw)
    with pytest.raises(ValueError, match="impl="):
        pk.sampled_linear_cross_entropy(jnp.zeros((4, 16)), jnp.zeros((10, 16)), t,
                                        impl="triton", **kw)
    with pytest.raises(ValueError, match="host"):
        pk.sampled_linear_cross_entropy(
            jnp.zeros((4, 16)), jnp.zeros((10, 16)), t, impl="xla",
            sampler=pk.PopularityTable(jnp.ones(9), jnp.zeros(9, jnp.int32), jnp.zeros(9)), **kw)
    with pytest.raises(ValueError, match="naive"):
        pk.linear_cross_entropy(jnp.zeros((4, 16)), jnp.zeros((10, 16)), t, impl="naive",
                                vocab_parallel=opts)
    # auto with a D the kernels cannot take runs the XLA path instead of failing.
    out = pk.sampled_linear_cross_entropy(jnp.zeros((4, 24)), jnp.zeros((10, 24)), t,
                                          impl="auto", **kw)
    assert np.isfinite(float(out))
    with pytest.raises(ValueError, match="power of two"):
        shard.check_shapes(64, 4)


@pytest.mark.gpu
@pytest.mark.parametrize("sampler", ["uniform", "popularity"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_gpu_pallas_matches_xla_one_device(sampler, dtype):
    # Compiled Triton kernels: ragged N, V > 2^16 (high half of the multiply-shift), vector
    # atomics with duplicate ids (popular items).
    _compare(3001, 100_003, 128, 255, sampler, dtype, impl="pallas", seed=2)


@pytest.mark.gpu
def test_gpu_cce_one_device_matches_linear_cross_entropy():
    rng = np.random.default_rng(9)
    v, d = 20_003, 128
    e, tab, t, w, _ = _problem(rng, 1001, v, d, "uniform")
    opts = _one_device_options(col_start=1, num_classes=v)
    e16 = jnp.asarray(e, jnp.bfloat16)
    f = lambda e_, tab_: pk.linear_cross_entropy(e_, tab_, jnp.asarray(t), where=jnp.asarray(w),
                                                 impl="pallas", vocab_parallel=opts)
    g = lambda e_, c_: pk.linear_cross_entropy(e_, c_, jnp.asarray(t), where=jnp.asarray(w),
                                               impl="pallas")
    loss, (de, dtab) = jax.jit(jax.value_and_grad(f, (0, 1)))(e16, jnp.asarray(tab))
    want, (de_w, dc_w) = jax.jit(jax.value_and_grad(g, (0, 1)))(e16, jnp.asarray(tab[1:v + 1]))
    np.testing.assert_allclose(float(loss), float(want), rtol=1e-5)
    scale = float(jnp.abs(dc_w).max())
    np.testing.assert_allclose(np.asarray(dtab)[1:v + 1], np.asarray(dc_w), atol=1e-2 * scale)
    np.testing.assert_allclose(np.asarray(de, np.float32), np.asarray(de_w, np.float32),
                               atol=1e-2 * float(jnp.abs(de_w.astype(jnp.float32)).max()))
