"""BERT4Rec: the network against a float64 numpy reference, padding invariance, dropout, the
cloze masking statistics, the loss selection through ``where``, eval inputs, learning a toy task,
and (once ``srs_jax.training`` exists) one tiny end-to-end run through the trainer."""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from srs_jax.config import ConfigError, LossSpec, ModelSpec, load_specs, run_config
from srs_jax.losses import LOSSES, build_loss
from srs_jax.models import bert4rec as b4
from srs_jax.training import loop

_erf = np.vectorize(math.erf)


@nnx.jit(static_argnames="deterministic")
def forward(model, ids, deterministic=True):
    """Jitted ``model(ids)`` (eager NNX dispatch is slow on a shared CPU)."""
    return model(ids, deterministic=deterministic)


def model_config(**overrides) -> ModelSpec:
    cfg = dict(
        name="bert4rec",
        hidden=32,
        num_blocks=2,
        num_heads=4,
        dropout=0.1,
        max_len=12,
        compute_dtype="float32",
        mask_prob=0.2,
        last_item_mask_prob=0.0,
        head_transform=True,
    )
    cfg.update(overrides)
    return ModelSpec(**cfg)


def ragged_ids(rng: np.random.Generator, batch: int, length: int, n_items: int, *, min_len: int = 0) -> np.ndarray:
    """Left-padded int32[B, L] with random lengths in [min_len, L] (some rows empty if min_len=0)."""
    lengths = rng.integers(min_len, length + 1, size=batch)
    ids = np.zeros((batch, length), np.int32)
    for r, n in enumerate(lengths):
        if n:
            ids[r, length - n :] = rng.integers(1, n_items + 1, size=n)
    return ids


# --------------------------------------------------------------------------- float64 reference


def _ln(x, scale, bias):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + b4.LN_EPS) * scale + bias


def _gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _p(v) -> np.ndarray:
    return np.asarray(v[...], np.float64)


def reference_forward(model: b4.Bert4Rec, ids: np.ndarray) -> np.ndarray:
    """The paper's forward pass in float64 numpy, from the model's parameters (no dropout)."""
    b, t = ids.shape
    table = _p(model.item_table.embedding)
    ids = np.where(ids == b4.MASK_TOKEN, model.n_items + 1, ids)
    valid = ids != 0
    x = table[ids] + _p(model.positions)[model.max_len - t :][None]
    x = _ln(x, _p(model.embed_norm.scale), _p(model.embed_norm.bias))
    for blk in model.blocks:
        att = blk.attention
        heads = att.num_heads
        d = x.shape[-1] // heads
        qkv = (x @ _p(att.qkv.kernel) + _p(att.qkv.bias)).reshape(b, t, 3, heads, d)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        s = np.einsum("bqnd,bknd->bnqk", q, k) / math.sqrt(d)
        s = np.where(valid[:, None, None, :], s, -np.inf)
        s = s - s.max(-1, keepdims=True)
        p = np.exp(s)
        p = p / p.sum(-1, keepdims=True)
        ctx = np.einsum("bnqk,bknd->bqnd", p, v).reshape(b, t, heads * d)
        a = ctx @ _p(att.out.kernel) + _p(att.out.bias)
        x = _ln(x + a, _p(blk.attention_norm.scale), _p(blk.attention_norm.bias))
        f = _gelu(x @ _p(blk.ffn_in.kernel) + _p(blk.ffn_in.bias)) @ _p(blk.ffn_out.kernel) + _p(blk.ffn_out.bias)
        x = _ln(x + f, _p(blk.ffn_norm.scale), _p(blk.ffn_norm.bias))
    if model.head_dense is not None:
        x = _gelu(x @ _p(model.head_dense.kernel) + _p(model.head_dense.bias))
        x = _ln(x, _p(model.head_norm.scale), _p(model.head_norm.bias))
    return x


def randomize_params(model: nnx.Module, seed: int) -> None:
    """Replaces every parameter by noise, so the reference check does not rely on the
    structured init (zero biases, unit LayerNorm scales)."""
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    # Vectors (biases, LayerNorm scales) around 1, matrices around 0.
    new = [0.2 * jax.random.normal(k, x.shape, x.dtype) + float(x.ndim == 1) for k, x in zip(keys, leaves)]
    nnx.update(model, jax.tree.unflatten(treedef, new))


# --------------------------------------------------------------------------- the network


@pytest.mark.parametrize("seed,head_transform", [(0, True), (1, False)])
def test_forward_matches_float64_reference_fp32(seed, head_transform):
    rng = np.random.default_rng(seed)
    n_items = int(rng.integers(5, 40))
    b, t = int(rng.integers(2, 7)), int(rng.integers(3, 13))
    cfg = model_config(head_transform=head_transform, num_heads=int(rng.choice([1, 2, 4])))
    model = b4.build(cfg, n_items, rngs=nnx.Rngs(seed))
    randomize_params(model, seed + 10)
    ids = ragged_ids(rng, b, t, n_items, min_len=1)
    ids[rng.random(ids.shape) < 0.2 * (ids > 0)] = b4.MASK_TOKEN
    got = np.asarray(forward(model, jnp.asarray(ids), deterministic=True), np.float64)
    want = reference_forward(model, ids)
    real = ids != 0
    # fp32 vs float64 through 2 post-LN blocks: ~1e-6 typical; 1e-4 absolute on unit-scale outputs.
    np.testing.assert_allclose(got[real], want[real], atol=1e-4, rtol=1e-4)


def test_forward_bf16_close_to_float64_reference():
    rng = np.random.default_rng(3)
    n_items, b, t = 30, 6, 12
    model = b4.build(model_config(compute_dtype="bfloat16"), n_items, rngs=nnx.Rngs(3))
    ids = ragged_ids(rng, b, t, n_items, min_len=1)
    hidden = forward(model, jnp.asarray(ids), deterministic=True)
    assert hidden.dtype == jnp.bfloat16
    assert model.output_embeddings().dtype == jnp.bfloat16
    got = np.asarray(hidden.astype(jnp.float32), np.float64)
    want = reference_forward(model, ids)
    real = ids != 0
    # bf16 has an 8-bit mantissa (rel. 4e-3 per op); LayerNorm outputs are O(1): 0.1 absolute max,
    # and the mean error must stay at the bf16 rounding level.
    err = np.abs(got[real] - want[real])
    assert err.max() < 0.1, err.max()
    assert err.mean() < 0.02, err.mean()
    # Padding stays invisible in bf16 too: a different padding row changes no real output.
    table = model.item_table.embedding[...]
    model.item_table.embedding[...] = table.at[0].set(jax.random.normal(jax.random.key(0), table.shape[1:]) * 5)
    again = np.asarray(forward(model, jnp.asarray(ids)).astype(jnp.float32))
    np.testing.assert_array_equal(again[real], got[real].astype(np.float32))


def test_shapes_table_rows_and_tied_head():
    n_items = 17
    model = b4.build(model_config(hidden=24, num_heads=3, max_len=9), n_items, rngs=nnx.Rngs(0))
    assert model.item_table.embedding[...].shape == (n_items + 2, 24)
    np.testing.assert_array_equal(np.asarray(model.item_table.embedding[...][0]), 0.0)
    out = model.output_embeddings()
    assert out.shape == (n_items, 24)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(model.item_table.embedding[...][1 : n_items + 1]))
    for t in (1, 9):
        h = forward(model, jnp.ones((3, t), jnp.int32))
        assert h.shape == (3, t, 24) and h.dtype == jnp.float32
    # The tied head: gradients of a score reach the input table rows of the scored items.
    ids = jnp.asarray([[0, 0, 3, 4, b4.MASK_TOKEN]])

    def score(m):
        return m(ids, deterministic=True)[0, -1] @ m.output_embeddings()[6]

    grads = nnx.jit(nnx.grad(score))(model)
    g = np.asarray(grads.item_table.embedding[...])
    assert np.abs(g[7]).sum() > 0  # item 7 = output row 6 (through the head) ...
    assert np.abs(g[n_items + 1]).sum() > 0  # ... and the [mask] row (through the input)
    assert np.abs(g[0]).sum() == 0 and np.abs(g[10]).sum() == 0  # padding, unused item


def test_mask_token_and_mask_row_are_the_same_input():
    n_items = 11
    model = b4.build(model_config(), n_items, rngs=nnx.Rngs(1))
    ids = np.array([[0, 0, 5, 2, b4.MASK_TOKEN], [1, b4.MASK_TOKEN, 3, 4, b4.MASK_TOKEN]], np.int32)
    explicit = np.where(ids == b4.MASK_TOKEN, n_items + 1, ids)
    a = forward(model, jnp.asarray(ids), deterministic=True)
    b = forward(model, jnp.asarray(explicit), deterministic=True)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_padding_never_attended():
    """Real outputs of a padded window equal those of its unpadded suffix, and neither the
    padding row nor the positions of padded slots change them."""
    rng = np.random.default_rng(7)
    n_items, b, t = 25, 8, 12
    model = b4.build(model_config(), n_items, rngs=nnx.Rngs(7))
    # Few distinct lengths (each suffix length is one compilation), full-length rows included.
    lengths = rng.choice([1, 5, t], size=b)
    lengths[:3] = [1, 5, t]
    ids = np.zeros((b, t), np.int32)
    for r, n in enumerate(lengths):
        ids[r, t - n :] = rng.integers(1, n_items + 1, size=n)
    ids[:, -1] = b4.MASK_TOKEN
    full = np.asarray(forward(model, jnp.asarray(ids), deterministic=True).astype(jnp.float32))
    for r in range(b):
        n = int((ids[r] != 0).sum())
        suffix = np.asarray(forward(model, jnp.asarray(ids[r : r + 1, t - n :]), deterministic=True).astype(jnp.float32))
        np.testing.assert_allclose(full[r, t - n :], suffix[0], atol=2e-5, rtol=0)

    # Perturb the padding row (every row's real outputs must stay bit-identical), then the
    # positions of the first t-5 slots (rows with <= 5 items must stay identical, longer rows
    # must change: the perturbation is not a no-op).
    real = ids != 0
    table = model.item_table.embedding[...]
    model.item_table.embedding[...] = table.at[0].set(jax.random.normal(jax.random.key(0), table.shape[1:]) * 5)
    perturbed = np.asarray(forward(model, jnp.asarray(ids)).astype(jnp.float32))
    np.testing.assert_array_equal(perturbed[real], full[real])
    noise = jax.random.normal(jax.random.key(1), (t - 5, model.positions[...].shape[1]))
    model.positions[...] = model.positions[...].at[: t - 5].add(noise)
    perturbed = np.asarray(forward(model, jnp.asarray(ids)).astype(jnp.float32))
    short = lengths <= 5
    np.testing.assert_array_equal(perturbed[short][real[short]], full[short][real[short]])
    assert np.abs(perturbed[~short] - full[~short]).max() > 0.1


def test_dropout_is_off_when_deterministic_and_fresh_each_call_otherwise():
    rng = np.random.default_rng(2)
    ids_np = ragged_ids(rng, 4, 10, 20, min_len=1)
    ids_np[0] = 0  # an all-padding row (the trainer's padded last batch) must stay finite
    ids = jnp.asarray(ids_np)
    model = b4.build(model_config(dropout=0.3), 20, rngs=nnx.Rngs(params=2, dropout=3))  # as the trainer
    d1 = forward(model, ids, deterministic=True)
    d2 = forward(model, ids, deterministic=True)
    np.testing.assert_array_equal(np.asarray(d1), np.asarray(d2))
    s1 = forward(model, ids, deterministic=False)
    s2 = forward(model, ids, deterministic=False)
    assert bool(jnp.isfinite(s1).all()) and bool(jnp.isfinite(d1).all())
    real = ids_np != 0
    assert np.abs(np.asarray(s1 - d1))[real].max() > 1e-2
    assert np.abs(np.asarray(s1 - s2))[real].max() > 1e-2
    # Re-seeding the dropout streams (what the trainer does every step) reproduces the masks.
    nnx.reseed(model, dropout=5)
    r1 = forward(model, ids, deterministic=False)
    nnx.reseed(model, dropout=5)
    r2 = forward(model, ids, deterministic=False)
    np.testing.assert_array_equal(np.asarray(r1), np.asarray(r2))


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(hidden=30, num_heads=4), "multiple of model.num_heads"),
        (dict(mask_prob=0.0), "mask_prob"),
        (dict(mask_prob=1.5), "mask_prob"),
        (dict(last_item_mask_prob=-0.1), "last_item_mask_prob"),
        (dict(dropout=1.0), "dropout"),
        (dict(max_len=0), "max_len"),
    ],
)
def test_bad_config_is_one_line_value_error(overrides, match):
    with pytest.raises(ValueError, match=match):
        b4.build(model_config(**overrides), 10, rngs=nnx.Rngs(0))


def test_unknown_field_and_too_long_input_are_reported():
    with pytest.raises(ConfigError, match="config.model.hiden is not a known field"):
        ModelSpec.from_dict({"name": "bert4rec", "hiden": 32})
    model = b4.build(model_config(max_len=4), 10, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="exceeds model.max_len=4"):
        model(jnp.ones((1, 5), jnp.int32), deterministic=True)
    with pytest.raises(ValueError, match="training batches need 'targets'"):
        b4.training_inputs({"inputs": np.ones((1, 4), np.int32)}, jax.random.key(0), model_config())


# --------------------------------------------------------------------------- cloze masking


def _expected_cloze(lengths: np.ndarray, p: float):
    """Per row: expected masked count and P(mask == {last item}) under the cloze rule
    (independent Bernoulli(p), plus one uniform forced position when none was drawn)."""
    n = lengths.astype(np.float64)
    none = (1 - p) ** n
    count = n * p + none
    only_last = p * (1 - p) ** (n - 1) + none / n
    return count, only_last


@pytest.mark.parametrize("mask_prob", [0.2, 0.45])
def test_masking_rate_and_support(mask_prob):
    rng = np.random.default_rng(11)
    seq = ragged_ids(rng, 3000, 20, 500)
    seq[:40] = 0  # all-padding rows (the trainer's padded last batch)
    cfg = model_config(mask_prob=mask_prob, last_item_mask_prob=0.0)
    inputs, targets = jax.jit(lambda s, k: b4.training_inputs({"targets": s}, k, cfg))(seq, jax.random.key(5))
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    real = seq > 0
    masked = inputs == b4.MASK_TOKEN
    lengths = real.sum(1)

    assert inputs.dtype == np.int32 and targets.dtype == np.int32 and inputs.shape == seq.shape
    assert not (masked & ~real).any(), "a padded position was masked"
    assert (targets[~real] == 0).all(), "a padded position carries a target"
    np.testing.assert_array_equal(masked, targets != 0)  # targets exactly at masked positions
    np.testing.assert_array_equal(targets[masked], seq[masked])  # ... holding the original item
    np.testing.assert_array_equal(inputs[~masked], seq[~masked])  # everything else untouched
    assert (masked.sum(1)[lengths > 0] >= 1).all(), "a non-empty row has no masked position"
    assert (masked.sum(1)[lengths == 0] == 0).all()

    # Rate: observed masked count vs its exact expectation, within 4 standard deviations.
    mean_count, _ = _expected_cloze(lengths[lengths > 0], mask_prob)
    var = (lengths[lengths > 0] * mask_prob * (1 - mask_prob)).sum()  # upper-bound-ish spread
    observed = masked.sum()
    assert abs(observed - mean_count.sum()) < 4 * math.sqrt(var), (observed, mean_count.sum())
    # Far from empty rows, the rate is mask_prob itself.
    long_rows = lengths >= 15
    rate = masked[long_rows].sum() / real[long_rows].sum()
    assert abs(rate - mask_prob) < 4 * math.sqrt(mask_prob * (1 - mask_prob) / real[long_rows].sum()) + 1e-3
    # No position bias among real positions: the masked share of the first and the last real
    # slot of long rows agree within noise.
    first = np.argmax(real, axis=1)
    share_first = masked[long_rows, first[long_rows]].mean()
    share_last = masked[long_rows, -1].mean()
    assert abs(share_first - share_last) < 5 * math.sqrt(mask_prob / long_rows.sum())


def test_last_item_rows():
    rng = np.random.default_rng(12)
    seq = ragged_ids(rng, 4000, 16, 300, min_len=1)
    real = seq > 0
    lengths = real.sum(1)
    last_only = np.zeros_like(real)
    last_only[:, -1] = True

    inputs, targets = b4.training_inputs({"targets": seq}, jax.random.key(1), model_config(last_item_mask_prob=1.0))
    masked = np.asarray(inputs) == b4.MASK_TOKEN
    np.testing.assert_array_equal(masked, last_only)
    np.testing.assert_array_equal(np.asarray(targets)[:, -1], seq[:, -1])

    q, p = 0.3, 0.2
    inputs, _ = b4.training_inputs({"targets": seq}, jax.random.key(2), model_config(mask_prob=p, last_item_mask_prob=q))
    masked = np.asarray(inputs) == b4.MASK_TOKEN
    is_last_only = (masked == last_only).all(1)
    _, p_only_last = _expected_cloze(lengths, p)
    prob = q + (1 - q) * p_only_last
    expected, sd = prob.sum(), math.sqrt((prob * (1 - prob)).sum())
    assert abs(is_last_only.sum() - expected) < 4 * sd, (is_last_only.sum(), expected)


def test_fresh_key_remasks_and_same_key_repeats():
    seq = ragged_ids(np.random.default_rng(13), 64, 20, 100, min_len=5)
    cfg = model_config(mask_prob=0.3, last_item_mask_prob=0.1)
    a, _ = b4.training_inputs({"targets": seq}, jax.random.key(0), cfg)
    b, _ = b4.training_inputs({"targets": seq}, jax.random.key(0), cfg)
    c, _ = b4.training_inputs({"targets": seq}, jax.random.key(1), cfg)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert (np.asarray(a) != np.asarray(c)).mean() > 0.1


def _cloze_rows(seed: int, b: int, t: int, n_items: int, cfg):
    seq = ragged_ids(np.random.default_rng(seed), b, t, n_items, min_len=2)
    seq[0] = 0  # an all-padding row
    input_ids, target_ids = b4.training_inputs({"targets": seq, "inputs": seq}, jax.random.key(seed), cfg)
    flat = np.asarray(target_ids).reshape(-1)
    return input_ids, jnp.asarray(np.maximum(flat - 1, 0), jnp.int32), jnp.asarray(flat > 0)


def test_only_masked_positions_enter_the_ce_loss():
    """BERT4Rec outputs + ``where = target_ids > 0``: the loss is the float64 CE over the masked
    rows only and has no gradient at any other row."""
    n_items, b, t = 40, 6, 10
    cfg = model_config(mask_prob=0.3, dropout=0.0)
    model = b4.build(cfg, n_items, rngs=nnx.Rngs(14))
    input_ids, labels, where = _cloze_rows(14, b, t, n_items, cfg)
    hidden = forward(model, input_ids).reshape(b * t, -1)
    classifier = model.output_embeddings()
    loss, g = jax.value_and_grad(lambda h: _loss_fn("ce")(h, classifier, labels, where))(hidden)

    logits = np.asarray(hidden, np.float64) @ np.asarray(classifier, np.float64).T
    m = logits.max(1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(1, keepdims=True)))[:, 0]
    rows = np.asarray(where)
    want = (lse - logits[np.arange(b * t), np.asarray(labels)])[rows].mean()
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    g = np.asarray(g)
    assert (g[~rows] == 0).all() and (np.abs(g[rows]).sum(1) > 0).all()


LOSS_TYPES = ("ce", "ce_neg", "bce", "bce_plus", "gbce", "sce", "cce", "cce_neg")


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_every_loss_family_sees_only_masked_rows(loss_type):
    """For every loss of the registry: rows that were not masked (padding included) neither
    change the loss nor receive gradient."""
    assert loss_type in LOSSES
    n_items, b, t, h = 50, 4, 8, 16
    _, labels, where = _cloze_rows(21, b, t, n_items, model_config(mask_prob=0.3))
    kh, kc, kn = jax.random.split(jax.random.key(21), 3)
    hidden = jax.random.normal(kh, (b * t, h), jnp.float32)
    classifier = 0.3 * jax.random.normal(kc, (n_items, h), jnp.float32)
    loss_obj = build_loss(LossSpec(type=loss_type, num_negatives=7, sampler="uniform", sharing="row",
                               impl="auto", gbce_t=0.75, sce_n_buckets=4, sce_bucket_size_x=8,
                               sce_bucket_size_y=8, sce_mix_x=True), n_items=n_items)

    def loss_of(hid):
        return loss_obj(hid, classifier, labels, where, key=jax.random.key(3))

    loss, g = jax.value_and_grad(loss_of)(hidden)
    rows = np.asarray(where)
    assert np.isfinite(float(loss))
    assert (np.asarray(g)[~rows] == 0).all(), "a row without target received gradient"
    assert np.abs(np.asarray(g)[rows]).sum() > 0
    noisy = jnp.where(jnp.asarray(rows)[:, None], hidden, 10.0 * jax.random.normal(kn, hidden.shape))
    np.testing.assert_allclose(float(loss_of(noisy)), float(loss), rtol=1e-6)


def _loss_fn(loss_type: str = "ce"):
    """The project's loss ``loss_type`` as ``f(hidden, classifier, labels, where)``."""

    def project_loss(h, c, labels, where):
        return build_loss(LossSpec(type=loss_type), n_items=c.shape[0])(h, c, labels, where,
                                                                       key=jax.random.key(0))

    return project_loss


# --------------------------------------------------------------------------- evaluation inputs


def test_eval_inputs_shift_and_append_mask():
    rng = np.random.default_rng(15)
    hist = ragged_ids(rng, 7, 9, 50)
    out = np.asarray(b4.eval_inputs(hist, model_config()))
    assert out.shape == hist.shape and out.dtype == np.int32
    np.testing.assert_array_equal(out[:, :-1], hist[:, 1:])
    assert (out[:, -1] == b4.MASK_TOKEN).all()
    with pytest.raises(ValueError, match="history must be int"):
        b4.eval_inputs(np.zeros((3,), np.int32), model_config())


# --------------------------------------------------------------------------- end to end


def test_end_to_end_through_the_trainer(tmp_path):
    """Two epochs of BERT4Rec + CCE (masked rows selected by ``where``) on tiny synthetic data
    through ``srs_jax.training.loop.train``: finite, decreasing loss and valid metrics."""
    c = run_config("synthetic")
    c.data.synthetic.n_users = 240
    c.data.synthetic.n_items = 150
    c.data.synthetic.mean_length = 12.0
    c.data.cache_dir = str(tmp_path / "cache")
    c.model.name = "bert4rec"
    c.model.hidden = 16
    c.model.max_len = 12
    c.model.mask_prob = 0.3
    c.model.last_item_mask_prob = 0.1
    c.loss.type = "cce"
    c.train.batch_size = 32
    c.train.max_epochs = 2
    c.train.patience = 10
    c.train.log_every = 3
    c.train.eval_batch_size = 64
    c.eval.ks = (1, 10, 20)
    c.eval.user_chunk = 50
    c.eval.item_chunk = 64
    results = loop.train(c, str(tmp_path / "run"))

    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [1, 2]
    losses = [row["train_loss"] for row in history]
    assert all(np.isfinite(losses)) and losses[1] < losses[0], losses
    for split in ("val", "test"):
        for k in ("ndcg@10", "hitrate@10"):
            assert 0.0 <= results[split][k] <= 1.0
    assert results["test"]["hitrate@20"] >= results["test"]["hitrate@10"]


# --------------------------------------------------------------------------- configs

_BERT4REC_ROWS = {  # reference settings: dataset -> loss -> (batch, length, negatives)
    "zvuk": {"cce": (1024, 128, 0), "cce_neg": (1024, 128, 2047)},
    "megamarket": {"cce": (2048, 320, 0), "cce_neg": (2048, 320, 4095)},
    "30music": {"cce": (256, 720, 0), "cce_neg": (256, 720, 4095)},
    "gowalla": {"cce": (1024, 320, 0), "cce_neg": (1024, 320, 511)},
    "beauty": {"cce": (1024, 32, 0), "cce_neg": (1024, 32, 511)},
    "movielens_20m": {"cce": (256, 512, 0), "cce_neg": (256, 512, 511)},
}


CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"


def _config_names():
    return sorted(p.stem for p in CONFIG_DIR.glob("*_bert4rec_*.py") if not p.stem.startswith("_"))


def _load_config_file(name: str):
    """``configs/<name>.py`` loaded by path (as ``--config`` does), ``get_config()`` called."""
    spec = importlib.util.spec_from_file_location(name, CONFIG_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def test_bert4rec_configs_match_issue_rows_and_validate():
    names = _config_names()
    expected = {f"{d}_bert4rec_{loss}" for d, row in _BERT4REC_ROWS.items() for loss in row}
    expected |= {"amazon_sports_bert4rec_ce", "amazon_games_bert4rec_ce", "synthetic_bert4rec_cce"}
    assert expected <= set(names), sorted(expected - set(names))
    for name in names:
        c = _load_config_file(name)
        spec = load_specs(c)
        assert c.model.name == "bert4rec" and c.workdir == f"runs/{name}", name
        assert 0 < c.model.mask_prob <= 1 and 0 <= c.model.last_item_mask_prob <= 1
        dataset, _, loss = name.partition("_bert4rec_")
        assert c.loss.type == loss
        if dataset in _BERT4REC_ROWS:
            batch, length, negatives = _BERT4REC_ROWS[dataset][loss]
            assert (c.train.batch_size, c.model.max_len, c.loss.num_negatives) == (batch, length, negatives), name
            assert (c.model.hidden, c.model.num_blocks, c.model.num_heads, c.model.dropout) == (256, 2, 2, 0.1)
        if dataset.startswith("amazon"):
            assert c.data.split == "leave_one_out" and c.model.mask_prob == 0.6
        if name in ("30music_bert4rec_cce", "amazon_sports_bert4rec_ce"):  # longest / Amazon: builds
            model = b4.build(spec.model, 7, rngs=nnx.Rngs(0))
            assert model.output_embeddings().shape == (7, c.model.hidden)
