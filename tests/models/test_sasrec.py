"""SASRec: float64 numpy forward reference, causality, padding, dropout, init, bf16, config errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from srs_jax.config import ModelSpec
from srs_jax.models import sasrec


@nnx.jit(static_argnames="deterministic")
def forward(model, ids, deterministic=True):
    """One compiled forward per shape (eager NNX dispatch is slow on a busy CPU)."""
    return model(ids, deterministic=deterministic)


def make_config(**overrides):
    cfg = dict(name="sasrec", hidden=32, num_blocks=2, num_heads=2, dropout=0.2, max_len=12,
               compute_dtype="float32")
    cfg.update(overrides)
    return ModelSpec(**cfg)


def random_ids(rng, batch, length, n_items):
    """Left-padded random histories of random lengths (some empty, some full)."""
    ids = rng.integers(1, n_items + 1, size=(batch, length)).astype(np.int32)
    lengths = rng.integers(0, length + 1, size=batch)
    lengths[0], lengths[-1] = length, 0
    for b, n in enumerate(lengths):
        ids[b, : length - n] = 0
    return ids


def perturb_params(model, seed):
    """Biases/LayerNorm params start at 0/1; randomise them so the reference check sees them."""
    rng = np.random.default_rng(seed)
    for path, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Param) and var[...].ndim == 1:
            var[...] = var[...] + jnp.asarray(rng.normal(0, 0.3, var[...].shape), jnp.float32)


def numpy_forward(model, ids):
    """float64 re-implementation of MemoryEfficientSRS's SASRec forward (deterministic)."""
    p = lambda v: np.asarray(v[...], np.float64)
    hidden, length = model.hidden, ids.shape[1]
    keep = (ids != 0)[..., None].astype(np.float64)

    def ln(x, mod):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-8) * p(mod.scale) + p(mod.bias)

    h = p(model.item_table.embedding)[ids] * math.sqrt(hidden) + p(model.positions)[model.max_len - length:]
    h = h * keep
    causal = np.tril(np.ones((length, length), bool))
    for blk in model.blocks:
        q = ln(h, blk.attn_norm)
        w, b = p(blk.attn.in_proj.kernel), p(blk.attn.in_proj.bias)
        qq = q @ w[:, :hidden] + b[:hidden]
        kk = h @ w[:, hidden:2 * hidden] + b[hidden:2 * hidden]
        vv = h @ w[:, 2 * hidden:] + b[2 * hidden:]
        nh, hd = blk.attn.num_heads, blk.attn.head_dim
        split = lambda t: t.reshape(t.shape[0], length, nh, hd).transpose(0, 2, 1, 3)
        s = split(qq) @ split(kk).transpose(0, 1, 3, 2) / math.sqrt(hd)
        s = np.where(causal, s, -np.inf)
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        a = (s @ split(vv)).transpose(0, 2, 1, 3).reshape(h.shape)
        a = a @ p(blk.attn.out_proj.kernel) + p(blk.attn.out_proj.bias)
        h = q + a
        u = ln(h, blk.ffn_norm)
        f = np.maximum(u @ p(blk.ffn.w1.kernel) + p(blk.ffn.w1.bias), 0)
        f = f @ p(blk.ffn.w2.kernel) + p(blk.ffn.w2.bias)
        h = (u + f) * keep
    return ln(h, model.final_norm)


@pytest.mark.parametrize("seed,hidden,heads,blocks,length", [(0, 32, 2, 2, 12), (1, 24, 3, 1, 7), (2, 16, 4, 3, 5)])
def test_forward_matches_float64_reference(seed, hidden, heads, blocks, length):
    rng = np.random.default_rng(seed)
    n_items = int(rng.integers(5, 60))
    cfg = make_config(hidden=hidden, num_heads=heads, num_blocks=blocks, max_len=12)
    model = sasrec.build(cfg, n_items, rngs=nnx.Rngs(params=seed, dropout=seed + 1))
    perturb_params(model, seed)
    ids = random_ids(rng, 6, length, n_items)
    out = forward(model, jnp.asarray(ids), deterministic=True)
    assert out.shape == (6, length, hidden) and out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out, np.float64), numpy_forward(model, ids), rtol=2e-4, atol=2e-4)


def test_causal_future_items_do_not_change_earlier_outputs():
    rng = np.random.default_rng(3)
    n_items, length = 40, 10
    model = sasrec.build(make_config(max_len=length), n_items, rngs=nnx.Rngs(params=3, dropout=4))
    ids = rng.integers(1, n_items + 1, size=(5, length)).astype(np.int32)
    ids[:, :2] = 0
    base = np.asarray(forward(model, jnp.asarray(ids), deterministic=True))
    for t in [2, 5, length - 1]:
        changed = ids.copy()
        changed[:, t] = (changed[:, t] % n_items) + 1  # a different real item
        out = np.asarray(forward(model, jnp.asarray(changed), deterministic=True))
        np.testing.assert_array_equal(out[:, :t], base[:, :t])
        assert np.abs(out[:, t:] - base[:, t:]).max() > 1e-4


def test_padded_rows_are_final_layernorm_bias():
    rng = np.random.default_rng(5)
    model = sasrec.build(make_config(), 30, rngs=nnx.Rngs(params=5, dropout=6))
    perturb_params(model, 5)
    ids = random_ids(rng, 8, 12, 30)
    out = np.asarray(forward(model, jnp.asarray(ids), deterministic=True))
    beta = np.asarray(model.final_norm.bias[...])
    pad = ids == 0
    assert pad.any() and (~pad).any()
    np.testing.assert_allclose(out[pad], np.broadcast_to(beta, out[pad].shape), atol=1e-6)
    # An all-padding row gives the same constant; real rows do not.
    assert np.abs(out[~pad] - beta).max() > 1e-2


def test_dropout_deterministic_vs_stochastic():
    rng = np.random.default_rng(7)
    model = sasrec.build(make_config(dropout=0.3), 30, rngs=nnx.Rngs(params=7, dropout=8))
    ids = jnp.asarray(random_ids(rng, 4, 12, 30))
    d1 = forward(model, ids, deterministic=True)
    d2 = forward(model, ids, deterministic=True)
    np.testing.assert_array_equal(np.asarray(d1), np.asarray(d2))
    s1 = forward(model, ids, deterministic=False)
    s2 = forward(model, ids, deterministic=False)  # the dropout stream advanced: a new mask
    assert np.abs(np.asarray(s1) - np.asarray(s2)).max() > 1e-3
    assert np.abs(np.asarray(s1) - np.asarray(d1)).max() > 1e-3
    # Zero dropout: stochastic == deterministic.
    m0 = sasrec.build(make_config(dropout=0.0), 30, rngs=nnx.Rngs(params=7, dropout=8))
    np.testing.assert_allclose(np.asarray(forward(m0, ids, deterministic=False)),
                               np.asarray(forward(m0, ids, deterministic=True)), rtol=1e-6, atol=1e-6)


def test_functional_split_merge_step_under_jit():
    """The trainer's pattern: split once, jit a pure function of (graphdef, state), merge inside."""
    rng = np.random.default_rng(9)
    model = sasrec.build(make_config(), 25, rngs=nnx.Rngs(params=9, dropout=10))
    graphdef, state = nnx.split(model)
    ids = jnp.asarray(random_ids(rng, 4, 12, 25))

    @jax.jit
    def step(state, ids):
        m = nnx.merge(graphdef, state)
        def loss_fn(m):
            h = m(ids, deterministic=False)
            return jnp.mean((h @ m.output_embeddings().T) ** 2)
        loss, grads = nnx.value_and_grad(loss_fn)(m)
        return loss, grads, nnx.state(m)

    l1, grads, state = step(state, ids)
    l2, _, state = step(state, ids)
    assert np.isfinite(l1) and float(l1) != float(l2)  # dropout masks differ between steps
    g = np.asarray(grads["item_table"]["embedding"][...])
    assert g.shape == (26, 32) and np.abs(g[1:]).max() > 0
    np.testing.assert_array_equal(g[0], 0)  # the pad row is never used: no gradient


def test_output_embeddings_tied_and_init_scales():
    n_items, hidden, max_len = 3000, 64, 50
    model = sasrec.build(make_config(hidden=hidden, max_len=max_len), n_items, rngs=nnx.Rngs(params=0, dropout=1))
    table = np.asarray(model.item_table.embedding[...])
    np.testing.assert_array_equal(np.asarray(model.output_embeddings()), table[1:])
    assert model.output_embeddings().shape == (n_items, hidden)

    def check_std(x, expected):
        assert abs(np.std(x) / expected - 1) < 0.05, (np.std(x), expected)

    check_std(table, math.sqrt(2 / (n_items + 1 + hidden)))
    check_std(np.asarray(model.positions[...]), math.sqrt(2 / (max_len + hidden)))
    blk = model.blocks[0]
    check_std(np.asarray(blk.attn.in_proj.kernel[...]), math.sqrt(2 / (4 * hidden)))
    check_std(np.asarray(blk.attn.out_proj.kernel[...]), math.sqrt(2 / (2 * hidden)))
    check_std(np.asarray(blk.ffn.w1.kernel[...]), math.sqrt(2 / (2 * hidden)))
    np.testing.assert_array_equal(np.asarray(blk.attn.in_proj.bias[...]), 0)
    b = np.asarray(blk.ffn.w1.bias[...])
    assert np.abs(b).max() <= 1 / math.sqrt(hidden) and np.abs(b).max() > 0.5 / math.sqrt(hidden)


def test_bfloat16_compute_close_to_float32_params_stay_float32():
    rng = np.random.default_rng(11)
    m32 = sasrec.build(make_config(), 40, rngs=nnx.Rngs(params=11, dropout=12))
    m16 = sasrec.build(make_config(compute_dtype="bfloat16"), 40, rngs=nnx.Rngs(params=11, dropout=12))
    assert all(v[...].dtype == jnp.float32 for _, v in nnx.iter_graph(m16) if isinstance(v, nnx.Param))
    ids = jnp.asarray(random_ids(rng, 5, 12, 40))
    o32, o16 = forward(m32, ids, deterministic=True), forward(m16, ids, deterministic=True)
    assert o16.dtype == jnp.bfloat16
    err = np.abs(np.asarray(o16, np.float32) - np.asarray(o32))
    assert err.max() < 0.15 and err.mean() < 0.02, (err.max(), err.mean())


def test_too_long_input_is_rejected():
    # Shorter inputs (right-aligned positions) are covered by the float64 reference test.
    model = sasrec.build(make_config(max_len=12), 20, rngs=nnx.Rngs(params=13, dropout=14))
    with pytest.raises(ValueError, match="max_len"):
        model(jnp.zeros((2, 13), jnp.int32), deterministic=True)


def test_config_errors_and_registry_helpers():
    with pytest.raises(ValueError, match="compute_dtype"):
        sasrec.build(make_config(compute_dtype="float16"), 10, rngs=nnx.Rngs(0))
    auto = sasrec.build(make_config(compute_dtype="auto"), 10, rngs=nnx.Rngs(0))
    assert auto.dtype == (jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16)
    with pytest.raises(ValueError, match="multiple of model.num_heads"):
        sasrec.build(make_config(hidden=30, num_heads=4), 10, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="dropout"):
        sasrec.build(make_config(dropout=1.0), 10, rngs=nnx.Rngs(0))
    batch = {"inputs": np.ones((2, 3), np.int32), "targets": np.full((2, 3), 2, np.int32)}
    x, y = sasrec.training_inputs(batch, jax.random.key(0), make_config())
    assert x is batch["inputs"] and y is batch["targets"]
    h = np.arange(6, dtype=np.int32).reshape(2, 3)
    assert sasrec.eval_inputs(h, make_config()) is h
