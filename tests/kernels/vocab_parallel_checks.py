"""Vocabulary parallelism on 8 forced CPU devices, run in a subprocess by
``test_vocab_parallel.py`` (XLA_FLAGS must be set before jax is imported).

``python tests/kernels/vocab_parallel_checks.py [NAME ...]`` runs the named checks (default all)
and prints one line per check: ``CHECK {"check": name, "ok": bool, "error": str, "seconds": s}``.
Only the public API of ``pallas_kernels`` is used (the losses with ``vocab_parallel=``, and
``pallas_kernels.vocab_parallel``'s reference helpers).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

import pallas_kernels as pk  # noqa: E402
from pallas_kernels import vocab_parallel as vp  # noqa: E402
from tests.multidevice import assert_close  # noqa: E402


def _mesh(data: int, vocab: int) -> Mesh:
    devices = np.asarray(jax.devices()[: data * vocab]).reshape(data, vocab)
    return Mesh(devices, ("data", "vocab"))


MESHES = [(8, 1), (1, 8), (2, 4)]


def _cce_ref64(e, table, t, w, col_start, v):
    """float64 (mean loss, dE, dTable) of softmax CE over table rows [col_start, col_start + V)."""
    e64 = np.asarray(e, np.float64)
    tab = np.asarray(table, np.float64)
    c64 = tab[col_start:col_start + v]
    z = e64 @ c64.T
    m = z.max(1, keepdims=True)
    lse = np.log(np.exp(z - m).sum(1)) + m[:, 0]
    n = len(t)
    cnt = max(int(w.sum()), 1)
    loss = ((lse - z[np.arange(n), t]) * w).sum() / cnt
    g = np.exp(z - lse[:, None])
    g[np.arange(n), t] -= 1.0
    g *= (w / cnt)[:, None]
    dtab = np.zeros_like(tab)
    dtab[col_start:col_start + v] = g.T @ e64
    return loss, g @ c64, dtab


def check_cce_loss_and_grads():
    """Vocabulary-parallel CCE (xla and Pallas-interpret per shard, f32 and bf16) vs float64."""
    rng = np.random.default_rng(1)
    cases = [("xla", jnp.float32, 1e-5, 1e-6), ("xla", jnp.bfloat16, 3e-2, 3e-3),
             ("pallas", jnp.float32, 1e-5, 1e-6)]
    for (data, vocab) in MESHES:
        mesh = _mesh(data, vocab)
        for impl, dtype, rtol, atol in cases:
            if (impl == "pallas" or dtype == jnp.bfloat16) and (data, vocab) != (2, 4):
                continue  # compiles cost time: one mesh each for the kernel path and bf16
            n = 8 * int(rng.integers(2, 6))
            d = int(rng.choice([8, 16, 24]))
            v = int(rng.integers(20, 60))
            col_start = int(rng.integers(0, 3))
            rows = -(-(col_start + v) // 8) * 8 + 8 * int(rng.integers(0, 2))
            e = (rng.normal(size=(n, d)) * 0.7).astype(np.float32)
            tab = (rng.normal(size=(rows, d)) * 0.7).astype(np.float32)
            tab[col_start + v:] = 0.0  # padding rows are zeros, as pad_item_table makes them
            t = rng.integers(0, v, n).astype(np.int32)
            w = rng.random(n) > 0.3
            t_in = np.where(w, t, -5).astype(np.int32)  # masked rows hold garbage labels

            opts = pk.VocabParallelOptions(mesh, col_start=col_start, num_classes=v)

            def f(e_, tab_):
                return pk.linear_cross_entropy(
                    e_.astype(dtype), tab_, jnp.asarray(t_in), where=jnp.asarray(w),
                    impl="interpret" if impl == "pallas" else impl,
                    config=pk.CCEConfig(block_v=16), vocab_parallel=opts)

            loss, (de, dtab) = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(e, tab)
            e_ref = np.asarray(jnp.asarray(e).astype(dtype).astype(jnp.float32))
            tab_ref = np.asarray(jnp.asarray(tab).astype(dtype).astype(jnp.float32))
            l64, de64, dt64 = _cce_ref64(e_ref, tab_ref, np.where(w, t, 0), w, col_start, v)
            tag = f"mesh {data}x{vocab} {impl} {jnp.dtype(dtype).name} N={n} D={d} V={v}"
            assert_close(f"{tag} loss", loss, l64, rtol, atol)
            assert_close(f"{tag} dE", de, de64, rtol * 3, atol)
            assert_close(f"{tag} dTable", dtab, dt64, rtol * 3, atol)
            if np.any(np.asarray(dtab)[col_start + v:] != 0) or np.any(np.asarray(dtab)[:col_start] != 0):
                raise AssertionError(f"{tag}: excluded rows got a gradient")


def _cce_neg_ref64(e, tab, t, w, ids, active, corr, col_start):
    e64, c64 = np.asarray(e, np.float64), np.asarray(tab, np.float64)
    n, d = e64.shape
    trow = t + col_start
    zp = np.einsum("nd,nd->n", e64, c64[trow])
    keep = active & (ids != trow[:, None])
    zn = np.where(keep, np.einsum("nd,nkd->nk", e64, c64[ids]) + corr[ids], -np.inf)
    m = np.maximum(zp, zn.max(1))
    lse = m + np.log(np.exp(zp - m) + np.exp(zn - m[:, None]).sum(1))
    cnt = max(int(w.sum()), 1)
    scale = w / cnt
    gp = (np.exp(zp - lse) - 1) * scale
    gn = np.exp(zn - lse[:, None]) * scale[:, None]
    de = gp[:, None] * c64[trow] + np.einsum("nk,nkd->nd", gn, c64[ids])
    dtab = np.zeros_like(c64)
    np.add.at(dtab, trow, gp[:, None] * e64)
    np.add.at(dtab, ids.reshape(-1), (gn[:, :, None] * e64[:, None, :]).reshape(-1, d))
    return ((lse - zp) * w).sum() / cnt, de, dtab, lse


def check_cce_neg_loss_and_grads():
    """Vocabulary-parallel CCE- (uniform and popularity) vs float64 with the same draws."""
    rng = np.random.default_rng(2)
    for (data, vocab) in MESHES:
        mesh = _mesh(data, vocab)
        for sampler in ("uniform", "popularity"):
            if sampler == "popularity" and (data, vocab) == (8, 1):
                continue  # one shard: popularity draws are tested on the sharded meshes
            n = 8 * int(rng.integers(2, 5))
            d, v = 16, int(rng.integers(30, 70))
            neg = int(rng.integers(5, 20))
            rows = -(-(v + 1) // 8) * 8
            e = (rng.normal(size=(n, d)) * 0.7).astype(np.float32)
            tab = (rng.normal(size=(rows, d)) * 0.7).astype(np.float32)
            t = rng.integers(0, v, n).astype(np.int32)
            t[: n // 4] = t[0]  # repeated targets: collisions with drawn negatives
            w = rng.random(n) > 0.25
            counts = None
            if sampler == "popularity":
                counts = rng.integers(0, 6, v) * (rng.random(v) > 0.3)
                counts[t] += 1  # targets are training items (nonzero counts)
            st = vp.shard_sampler_tables(rows, vocab, neg, col_start=1, num_classes=v,
                                         item_counts=counts)
            table = None if counts is None else pk.popularity_table(counts)
            opts = pk.VocabParallelOptions(mesh, col_start=1, num_classes=v)
            seed = int(rng.integers(0, 2**31))

            def f(e_, tab_):
                return pk.sampled_linear_cross_entropy(
                    e_, tab_, jnp.asarray(t), where=jnp.asarray(w), num_negatives=neg,
                    seed=seed, sampler=table, impl="xla", vocab_parallel=opts)

            loss, (de, dtab) = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(e, tab)
            ids, act = vp.shard_negative_ids(n, rows, options=opts, num_negatives=neg, seed=seed,
                                             sampler=table)
            ids = np.asarray(ids).transpose(1, 0, 2).reshape(n, -1)
            act = np.asarray(act).transpose(1, 0, 2).reshape(n, -1)
            if counts is not None:
                drawn = ids[act] - 1
                if np.any(counts[drawn] == 0):
                    raise AssertionError("popularity sampler drew an item with zero count")
            if np.any((ids[act] < 1) | (ids[act] > v)):
                raise AssertionError("a draw fell outside the item rows")
            if act.sum(1).max() != st["n_draws"].sum() or abs(st["n_draws"].sum() - neg) > vocab:
                raise AssertionError(f"draw counts {st['n_draws']} do not add up to ~{neg}")
            corr = vp.log_sampling_weight_reference(st, rows, vocab)
            l64, de64, dt64, _ = _cce_neg_ref64(e, tab, t, w, ids, act, corr, 1)
            tag = f"cce_neg mesh {data}x{vocab} {sampler} N={n} V={v} n={neg}"
            assert_close(f"{tag} loss", loss, l64, 1e-5, 1e-6)
            assert_close(f"{tag} dE", de, de64, 3e-5, 1e-6)
            assert_close(f"{tag} dTable", dtab, dt64, 3e-5, 1e-6)


def check_cce_neg_pallas():
    """Per-shard CCE- Pallas kernels (interpreter) vs the XLA path and float64 on the same draws:
    ragged rows per data shard (not a multiple of the row tile 8), masked rows with garbage
    labels, padding rows behind the items (col_start=1), a popularity shard with no draws."""
    rng = np.random.default_rng(4)
    # (mesh, sampler, dtype, N, V): V + 1 rows padded to a multiple of 8.
    cases = [((1, 8), "uniform", jnp.float32, 19, 45), ((1, 8), "popularity", jnp.bfloat16, 21, 37),
             ((2, 4), "uniform", jnp.bfloat16, 22, 58), ((2, 4), "popularity", jnp.float32, 26, 37)]
    for (data, vocab), sampler, dtype, n, v in cases:
        mesh = _mesh(data, vocab)
        d, neg = 16, int(rng.integers(9, 20))
        rows = -(-(v + 1) // 8) * 8
        e = (rng.normal(size=(n, d)) * 0.7).astype(np.float32)
        tab = (rng.normal(size=(rows, d)) * 0.7).astype(np.float32)
        last = (vocab - 1) * (rows // vocab) - 1  # first label on the last shard
        t = rng.integers(0, last, n).astype(np.int32)
        t[: n // 4] = t[0]  # repeated targets: collisions with drawn negatives
        w = rng.random(n) > 0.25
        t_in = np.where(w, t, -7).astype(np.int32)
        counts = None
        if sampler == "popularity":
            counts = rng.integers(0, 6, v) * (rng.random(v) > 0.3)
            counts[t] += 1
            counts[last:] = 0  # the last shard's items: pi_k = 0, n_k = 0 (no kernel loop trips)
        st = vp.shard_sampler_tables(rows, vocab, neg, col_start=1, num_classes=v,
                                     item_counts=counts)
        if counts is not None and st["n_draws"][-1] != 0:
            raise AssertionError(f"test setup: last shard should draw nothing, {st['n_draws']}")
        table = None if counts is None else pk.popularity_table(counts)
        opts = pk.VocabParallelOptions(mesh, col_start=1, num_classes=v)
        seed = int(rng.integers(0, 2**31))

        def grads(impl):
            def f(e_, tab_):
                return pk.sampled_linear_cross_entropy(
                    e_.astype(dtype), tab_, jnp.asarray(t_in), where=jnp.asarray(w),
                    num_negatives=neg, seed=seed, sampler=table, impl=impl,
                    config=pk.SampledConfig(row_block=8), vocab_parallel=opts)

            return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(e, tab)

        (loss, (de, dtab)), (loss_x, (de_x, dtab_x)) = grads("interpret"), grads("xla")
        ids, act = vp.shard_negative_ids(n, rows, options=opts, num_negatives=neg, seed=seed,
                                         sampler=table)
        ids = np.asarray(ids).transpose(1, 0, 2).reshape(n, -1)
        act = np.asarray(act).transpose(1, 0, 2).reshape(n, -1)
        corr = vp.log_sampling_weight_reference(st, rows, vocab)
        e_r = np.asarray(jnp.asarray(e).astype(dtype).astype(jnp.float32))
        tab_r = np.asarray(jnp.asarray(tab).astype(dtype).astype(jnp.float32))
        l64, de64, dt64, _ = _cce_neg_ref64(e_r, tab_r, t, w, ids, act, corr, 1)
        tag = f"cce_neg pallas mesh {data}x{vocab} {sampler} {jnp.dtype(dtype).name} N={n} V={v}"
        # dE comes back in the compute dtype: bf16 rounding (2^-8 relative) dominates there.
        de_rtol = 3e-5 if dtype == jnp.float32 else 8e-3
        assert_close(f"{tag} loss", loss, l64, 1e-5, 1e-6)
        assert_close(f"{tag} dE", de, de64, de_rtol, 1e-6)
        assert_close(f"{tag} dTable", dtab, dt64, 3e-5, 1e-6)
        # Same draws, same math: only float summation order differs from the XLA path.
        assert_close(f"{tag} loss vs xla", loss, loss_x, 1e-6, 1e-7)
        assert_close(f"{tag} dE vs xla", de, de_x, de_rtol, 1e-7)
        assert_close(f"{tag} dTable vs xla", dtab, dtab_x, 1e-5, 1e-7)
        if np.any(np.asarray(dtab)[v + 1:] != 0) or np.any(np.asarray(dtab)[0] != 0):
            raise AssertionError(f"{tag}: excluded rows got a gradient")


def check_cce_neg_unbiased():
    """E[exp(lse)] over seeds equals the full softmax denominator (uniform and popularity)."""
    rng = np.random.default_rng(3)
    mesh = _mesh(2, 4)
    n, d, v, neg, rows = 8, 8, 45, 6, 48
    e = (rng.normal(size=(n, d)) * 0.5).astype(np.float32)
    tab = (rng.normal(size=(rows, d)) * 0.5).astype(np.float32)
    t = rng.integers(0, v, n).astype(np.int32)
    z = e.astype(np.float64) @ tab[1:v + 1].astype(np.float64).T
    z_full = np.exp(z).sum(1)
    for counts in (None, rng.integers(1, 9, v)):
        table = None if counts is None else pk.popularity_table(counts)
        opts = pk.VocabParallelOptions(mesh, col_start=1, num_classes=v)

        @jax.jit
        def lse_of(seed):
            rows_loss = pk.sampled_linear_cross_entropy(
                jnp.asarray(e), jnp.asarray(tab), jnp.asarray(t), num_negatives=neg, seed=seed,
                sampler=table, reduction="none", impl="xla", vocab_parallel=opts)
            return rows_loss + jnp.einsum("nd,nd->n", e, jnp.asarray(tab)[t + 1])

        est = np.exp(np.stack([np.asarray(lse_of(jnp.uint32(s)), np.float64) for s in range(400)]))
        mean, sem = est.mean(0), est.std(0) / np.sqrt(est.shape[0])
        if np.any(np.abs(mean - z_full) > 5 * sem + 1e-6 * z_full):
            raise AssertionError(f"biased partition estimate: {mean} vs {z_full} (sem {sem})")


def check_cce_matches_single_device_loss():
    """The vocabulary-parallel loss equals the single-device loss on the class rows (same impl),
    for every reduction; the excluded table rows get exactly zero gradient."""
    rng = np.random.default_rng(5)
    n, d, v, rows = 24, 16, 37, 48
    e = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    tab = jnp.asarray(rng.normal(size=(rows, d)), jnp.float32)
    t = jnp.asarray(rng.integers(0, v, n), jnp.int32)
    w = jnp.asarray(rng.random(n) > 0.2)
    opts = pk.VocabParallelOptions(_mesh(2, 4), col_start=2, num_classes=v)
    for reduction in ("mean", "sum", "none"):
        got = pk.linear_cross_entropy(e, tab, t, where=w, reduction=reduction, impl="xla",
                                      vocab_parallel=opts)
        want = pk.linear_cross_entropy(e, tab[2:2 + v], t, where=w, reduction=reduction,
                                       impl="xla")
        assert_close(f"reduction={reduction}", got, want, 2e-6, 2e-6)
    g = jax.grad(lambda tab_: pk.linear_cross_entropy(e, tab_, t, where=w, impl="xla",
                                                      vocab_parallel=opts))(tab)
    if np.any(np.asarray(g)[:2] != 0) or np.any(np.asarray(g)[2 + v:] != 0):
        raise AssertionError("excluded rows got a gradient")


def check_errors_are_one_line():
    """Layout errors name the problem and the fix."""
    opts = pk.VocabParallelOptions(_mesh(2, 4))
    e, t = jnp.zeros((7, 8)), jnp.zeros((7,), jnp.int32)
    cases = [
        (lambda: pk.linear_cross_entropy(e, jnp.zeros((16, 8)), t, vocab_parallel=opts),
         "divisible by 2"),
        (lambda: pk.linear_cross_entropy(jnp.zeros((8, 8)), jnp.zeros((10, 8)),
                                         jnp.zeros(8, jnp.int32), vocab_parallel=opts),
         "not divisible by the 4"),
        (lambda: pk.linear_cross_entropy(
            jnp.zeros((8, 8)), jnp.zeros((16, 8)), jnp.zeros(8, jnp.int32),
            vocab_parallel=pk.VocabParallelOptions(opts.mesh, vocab_axis="model")), "'model'"),
        (lambda: pk.sampled_linear_cross_entropy(
            jnp.zeros((8, 16)), jnp.zeros((16, 16)), jnp.zeros(8, jnp.int32), num_negatives=3,
            seed=0, sharing="block", vocab_parallel=opts), "sharing='row'"),
        (lambda: pk.sampled_linear_cross_entropy(
            jnp.zeros((8, 24)), jnp.zeros((16, 24)), jnp.zeros(8, jnp.int32), num_negatives=3,
            seed=0, impl="interpret", vocab_parallel=opts), "D a power of two"),
    ]
    for fn, match in cases:
        try:
            fn()
        except ValueError as err:
            if match not in str(err) or "\n" in str(err):
                raise AssertionError(f"expected a one-line error with {match!r}, got {err}")
        else:
            raise AssertionError(f"no error (expected {match!r})")


CHECKS = {name[len("check_"):]: fn for name, fn in sorted(globals().items())
          if name.startswith("check_") and callable(fn)}


def main(names):
    for name in names or sorted(CHECKS):
        t0 = time.time()
        try:
            CHECKS[name]()
            ok, error = True, ""
        except Exception:  # noqa: BLE001 (reported to the test)
            ok, error = False, traceback.format_exc()[-3000:]
        print("CHECK " + json.dumps({"check": name, "ok": ok, "error": error,
                                     "seconds": round(time.time() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
