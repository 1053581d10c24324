"""Every loss trains SASRec on a learnable pattern (the next item is the current one + 1)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from srs_jax.config import LossSpec, ModelSpec
from srs_jax.losses import build_loss
from srs_jax.models import sasrec

N_ITEMS, LENGTH, BATCH = 30, 8, 32


def batch(rng):
    start = rng.integers(0, N_ITEMS, (BATCH, 1))
    seq = (start + np.arange(LENGTH + 1)) % N_ITEMS + 1  # ids 1..V
    seq[: BATCH // 4, : LENGTH // 2] = 0  # some left padding
    inputs, targets = seq[:, :-1].copy(), seq[:, 1:].copy()
    targets[inputs == 0] = 0  # no target where there is no input
    return jnp.asarray(inputs, jnp.int32), jnp.asarray(targets, jnp.int32)


@pytest.mark.parametrize("loss", [
    {"type": "ce"}, {"type": "ce_neg", "num_negatives": 8}, {"type": "bce"},
    {"type": "bce_plus", "num_negatives": 8}, {"type": "gbce", "num_negatives": 8, "gbce_t": 0.75},
    {"type": "sce", "sce_n_buckets": 8, "sce_bucket_size_x": 64, "sce_bucket_size_y": 10},
    {"type": "cce", "impl": "xla"}, {"type": "cce_neg", "num_negatives": 8, "impl": "xla"},
    {"type": "ce_neg", "num_negatives": 8, "sampler": "popularity"},
], ids=lambda c: "-".join(str(v) for v in c.values()))
def test_loss_trains_sasrec(loss):
    cfg = ModelSpec(hidden=32, num_blocks=1, num_heads=2, dropout=0.0, max_len=LENGTH,
                    compute_dtype="float32")
    model = sasrec.build(cfg, N_ITEMS, rngs=nnx.Rngs(params=0, dropout=1))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt = optax.adam(1e-2)
    counts = np.concatenate([[0], np.arange(1, N_ITEMS + 1)])  # popularity sampler only
    loss_obj = build_loss(LossSpec(**loss), n_items=N_ITEMS, item_counts=counts)

    def loss_fn(params, inputs, targets, key):
        m = nnx.merge(graphdef, params, rest)
        hidden = m(inputs, deterministic=True).reshape(-1, cfg.hidden)
        flat = targets.reshape(-1)
        return loss_obj(hidden, m.output_embeddings(), flat - 1, flat > 0, key=key)

    @jax.jit
    def step(params, opt_state, inputs, targets, key):
        value, grads = jax.value_and_grad(loss_fn)(params, inputs, targets, key)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, value

    @jax.jit
    def accuracy(params, inputs, targets):
        m = nnx.merge(graphdef, params, rest)
        scores = m(inputs, deterministic=True)[:, -1] @ m.output_embeddings().T
        return jnp.mean(jnp.argmax(scores, -1) + 1 == targets[:, -1])

    rng = np.random.default_rng(0)
    test_inputs, test_targets = batch(np.random.default_rng(1))
    before = float(accuracy(params, test_inputs, test_targets))
    opt_state = opt.init(params)
    for i in range(80):
        params, opt_state, value = step(params, opt_state, *batch(rng), jax.random.key(i))
        assert np.isfinite(float(value))
    after = float(accuracy(params, test_inputs, test_targets))
    assert before < 0.25 and after > 0.8, (before, after)  # chance is 1/30
