"""train_step / encode_step against float64 numpy references on a small SASRec."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from srs_jax import models
from srs_jax.config import ConfigError, LossSpec, ModelSpec, TrainSpec
from srs_jax.losses import FullSoftmax, build_loss
from srs_jax.training import steps

V, H, L = 37, 16, 9


def _configs(dtype="float32", dropout=0.0, loss="ce"):
    model = ModelSpec(name="sasrec", hidden=H, num_blocks=2, num_heads=2, dropout=dropout,
                      max_len=L, compute_dtype=dtype)
    loss_obj = build_loss(LossSpec(type=loss, num_negatives=7, sampler="uniform", sharing="row",
                                   impl="auto"), n_items=V)
    train = TrainSpec(lr=3e-3, b1=0.9, b2=0.98, eps=1e-8, warmup_steps=0, schedule="constant",
                      grad_clip=0.0)
    return model, loss_obj, train


def _batch(rng, b):
    """Left-padded windows of random lengths (some rows all padding) with next-item targets."""
    window = np.zeros((b, L + 1), np.int32)
    for r in range(b):
        n = rng.integers(0, L + 2)
        if n:
            window[r, -n:] = rng.integers(1, V + 1, n)
    return {"inputs": window[:, :-1], "targets": window[:, 1:]}


def _np_ce(hidden, table, targets):
    """float64 mean CE over positions with a target, scoring items 1..V (rows 1..V of the table)."""
    h = np.asarray(hidden, np.float64).reshape(-1, H)
    logits = h @ np.asarray(table, np.float64)[1:].T
    t = targets.reshape(-1)
    keep = t > 0
    m = logits.max(1, keepdims=True)
    lse = (m[:, 0] + np.log(np.exp(logits - m).sum(1)))
    return float(np.mean((lse - logits[np.arange(len(t)), np.maximum(t - 1, 0)])[keep]))


@pytest.mark.parametrize("b", [5])
def test_train_step_loss_and_update_match_references(b):
    rng = np.random.default_rng(b)
    model_cfg, loss_cfg, train_cfg = _configs()
    # eps 1e-3 keeps Adam's first step Lipschitz in g (tiny gradients: g / (|g| + eps)).
    train_cfg = dataclasses.replace(train_cfg, eps=1e-3)
    model = models.build_model(model_cfg, V, rngs=nnx.Rngs(params=b, dropout=1))
    graphdef, state = steps.split_model(model)
    opt = steps.make_optimizer(train_cfg, 10)
    opt_state = opt.init(state.params)
    batch = _batch(rng, b)
    # float64 reference of the loss from the model's own forward pass.
    hidden = model(jnp.asarray(batch["inputs"]), deterministic=True)
    ref_loss = _np_ce(hidden, model.item_table.embedding[...], batch["targets"])
    # Independent Adam update on jax.grad of the same loss.
    params0 = jax.tree.map(np.asarray, state.params)

    def loss_fn(p):
        m = nnx.merge(graphdef, p, state.rest)
        hid = m(jnp.asarray(batch["inputs"]), deterministic=True).reshape(-1, H)
        logits = hid @ m.output_embeddings().T
        t = jnp.asarray(batch["targets"]).reshape(-1)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(t - 1, 0))
        return jnp.sum(jnp.where(t > 0, ce, 0.0)) / jnp.maximum((t > 0).sum(), 1)

    grads = jax.grad(loss_fn)(state.params)
    ref_updates, _ = opt.update(grads, opt_state, state.params)
    ref_params = optax.apply_updates(state.params, ref_updates)
    ref_params = jax.tree.map(np.asarray, ref_params)
    ref_gnorm = float(np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2)
                                  for g in jax.tree.leaves(grads))))

    step = steps.make_train_step(model_cfg, loss_cfg, opt)
    new_state, new_opt, metrics = step(graphdef, state, opt_state, batch, jax.random.key(0))
    n_targets = int((batch["targets"] > 0).sum())
    assert int(metrics["n_targets"]) == n_targets
    assert float(metrics["finite"]) == 1.0
    if n_targets:
        np.testing.assert_allclose(float(metrics["loss"]), ref_loss, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(float(metrics["grad_norm"]), ref_gnorm, rtol=1e-4, atol=1e-7)
    for new, ref, old in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(ref_params),
                             jax.tree.leaves(params0)):
        assert new.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(new), ref, rtol=1e-5, atol=1e-6)
    assert any(not np.array_equal(np.asarray(n), o)
               for n, o in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(params0)))


def test_padding_rows_do_not_change_the_step():
    """All-zero rows (BatchIterator's padding of the last batch) carry no target and no gradient."""
    rng = np.random.default_rng(3)
    model_cfg, loss_cfg, train_cfg = _configs()
    train_cfg = dataclasses.replace(train_cfg, eps=1e-3)
    batch = _batch(rng, 5)
    padded = {k: np.concatenate([v, np.zeros((3, L), np.int32)]) for k, v in batch.items()}
    outs = []
    opt = steps.make_optimizer(train_cfg, 10)
    step = steps.make_train_step(model_cfg, loss_cfg, opt)
    for bt in (batch, padded):
        model = models.build_model(model_cfg, V, rngs=nnx.Rngs(params=0, dropout=1))
        graphdef, state = steps.split_model(model)
        outs.append(step(graphdef, state, opt.init(state.params), bt, jax.random.key(1)))
    np.testing.assert_allclose(float(outs[0][2]["loss"]), float(outs[1][2]["loss"]), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(outs[0][0].params), jax.tree.leaves(outs[1][0].params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_dropout_depends_only_on_the_step_key():
    rng = np.random.default_rng(4)
    model_cfg, loss_cfg, train_cfg = _configs(dropout=0.3)
    batch = _batch(rng, 6)
    losses = {}
    opt = steps.make_optimizer(train_cfg, 10)
    step = steps.make_train_step(model_cfg, loss_cfg, opt)  # one compile, reused
    for name, key in (("a", 5), ("b", 5), ("c", 6)):
        model = models.build_model(model_cfg, V, rngs=nnx.Rngs(params=0, dropout=1))
        graphdef, state = steps.split_model(model)
        losses[name] = float(step(graphdef, state, opt.init(state.params), batch,
                                  jax.random.key(key))[2]["loss"])
    assert losses["a"] == losses["b"]
    assert losses["a"] != losses["c"]


class NanLoss(FullSoftmax):
    """The full softmax times NaN: a loss object like any other (the step's only view of it)."""

    def compute(self, hidden, classifier, labels, where, key):
        return super().compute(hidden, classifier, labels, where, key) * jnp.float32(np.nan)


def test_non_finite_loss_leaves_state_unchanged():
    rng = np.random.default_rng(5)
    model_cfg, _, train_cfg = _configs()
    loss_cfg = NanLoss(LossSpec(type="ce"), V)
    model = models.build_model(model_cfg, V, rngs=nnx.Rngs(params=0, dropout=1))
    graphdef, state = steps.split_model(model)
    opt = steps.make_optimizer(train_cfg, 10)
    opt_state = opt.init(state.params)
    before = jax.tree.map(np.asarray, (state.params, opt_state))
    step = steps.make_train_step(model_cfg, loss_cfg, opt)
    new_state, new_opt, metrics = step(graphdef, state, opt_state, _batch(rng, 4), jax.random.key(0))
    assert float(metrics["finite"]) == 0.0 and np.isnan(float(metrics["loss"]))
    after = jax.tree.map(np.asarray, (new_state.params, new_opt))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        np.testing.assert_array_equal(a, b)


def test_bfloat16_compute_keeps_float32_params_and_close_loss():
    rng = np.random.default_rng(6)
    batch = _batch(rng, 8)
    out = {}
    for dtype in ("float32", "bfloat16"):
        model_cfg, loss_cfg, train_cfg = _configs(dtype=dtype, loss="cce")
        model = models.build_model(model_cfg, V, rngs=nnx.Rngs(params=0, dropout=1))
        graphdef, state = steps.split_model(model)
        opt = steps.make_optimizer(train_cfg, 10)
        step = steps.make_train_step(model_cfg, loss_cfg, opt)
        new_state, _, m = step(graphdef, state, opt.init(state.params), batch, jax.random.key(0))
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(new_state.params))
        out[dtype] = float(m["loss"])
    # bf16 has 8 mantissa bits: the loss (~log V) agrees to ~1%.
    np.testing.assert_allclose(out["bfloat16"], out["float32"], rtol=2e-2)


def test_encode_step_reads_last_position():
    rng = np.random.default_rng(7)
    model_cfg, _, _ = _configs()
    model = models.build_model(model_cfg, V, rngs=nnx.Rngs(params=0, dropout=1))
    graphdef, state = steps.split_model(model)
    history = _batch(rng, 5)["inputs"]
    history[:, -1] = rng.integers(1, V + 1, 5)  # evaluation windows end with a real item
    q = steps.make_encode_step(model_cfg)(graphdef, state, jnp.asarray(history))
    full = np.asarray(model(jnp.asarray(history), deterministic=True), np.float64)
    assert q.shape == (5, H) and q.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(q), full[:, -1], rtol=1e-6, atol=1e-6)
    emb = steps.output_embeddings(graphdef, state)
    np.testing.assert_array_equal(np.asarray(emb), np.asarray(model.item_table.embedding[...])[1:])


@pytest.mark.parametrize("schedule,warmup", [("constant", 0), ("constant", 4), ("cosine", 3)])
def test_learning_rate_schedules(schedule, warmup):
    cfg = TrainSpec(lr=1e-3, warmup_steps=warmup, schedule=schedule)
    sched = steps.learning_rate_schedule(cfg, total_steps=20)
    values = np.array([float(sched(i)) for i in range(21)])
    if warmup:
        np.testing.assert_allclose(values[:warmup + 1], np.linspace(0, 1e-3, warmup + 1), rtol=1e-6, atol=1e-12)
    if schedule == "constant":
        np.testing.assert_allclose(values[warmup:], 1e-3, rtol=1e-6)
    else:
        assert values[warmup] == pytest.approx(1e-3) and values[20] == pytest.approx(0.0, abs=1e-12)
        assert np.all(np.diff(values[warmup:]) <= 1e-12)
    with pytest.raises(ConfigError, match="schedule"):
        TrainSpec(lr=1e-3, warmup_steps=0, schedule="linear")


def test_gradient_clipping_bounds_the_update():
    _, _, train_cfg = _configs()
    g = {"w": jnp.array([3.0, -4.0])}
    for clip, expected_g in ((1e-3, np.array([3.0, -4.0]) * 1e-3 / 5.0), (0.0, np.array([3.0, -4.0]))):
        # large eps: Adam's first step ~ lr * g, so clipping is visible
        train_cfg = dataclasses.replace(train_cfg, grad_clip=clip, eps=1.0)
        opt = steps.make_optimizer(train_cfg, 10)
        upd, _ = opt.update(g, opt.init(g), g)
        # First Adam step with bias correction: -lr * g / (|g| + eps).
        np.testing.assert_allclose(np.asarray(upd["w"]),
                                   -3e-3 * expected_g / (np.abs(expected_g) + 1.0), rtol=1e-5)
