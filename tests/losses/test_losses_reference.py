"""Every plain-JAX loss vs a float64 numpy reference: value and jax.grad (hidden, classifier)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import loss_refs as ref
from loss_refs import compute as loss_of
from srs_jax.config import ConfigError, LossSpec
from srs_jax.losses import build_loss
from srs_jax.losses import LOSSES
from srs_jax.losses.sampled import gbce_beta


def random_problem(seed, *, dtype=jnp.float32):
    """Random ragged shapes; masked rows hold label -1 and large garbage outputs."""
    rng = np.random.default_rng(seed)
    n, h, v = int(rng.integers(13, 31)), int(rng.integers(3, 10)), int(rng.integers(5, 41))
    hidden = rng.normal(0, 1.0, (n, h))
    classifier = rng.normal(0, 0.7, (v, h))
    labels = rng.integers(0, v, n).astype(np.int32)
    where = rng.random(n) < 0.7
    where[0] = True
    labels[~where] = -1
    hidden[~where] *= 50.0
    hidden_j = jnp.asarray(hidden, dtype)
    classifier_j = jnp.asarray(classifier, jnp.float32)
    # The float64 reference sees exactly the values the loss computes with (hidden dtype).
    h64 = np.asarray(hidden_j.astype(jnp.float32), np.float64)
    c64 = np.asarray(classifier_j.astype(dtype).astype(jnp.float32), np.float64)
    return dict(rng=rng, hidden=hidden_j, classifier=classifier_j, labels=jnp.asarray(labels),
                where=jnp.asarray(where), h64=h64, c64=c64, y=labels, w=where)


def jax_value_and_grads(cfg, p, key, item_counts=None):
    f = lambda hd, cl: loss_of(cfg, hd, cl, p["labels"], p["where"], key=key, item_counts=item_counts)
    value, (gh, gc) = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(p["hidden"], p["classifier"])
    return float(value), np.asarray(gh.astype(jnp.float32), np.float64), np.asarray(gc, np.float64)


def check(cfg, p, key, ref_fn, *, item_counts=None, bf16=False):
    value, gh, gc = jax_value_and_grads(cfg, p, key, item_counts)
    expected = ref_fn(p["h64"], p["c64"])
    eh, ec = ref.fd_grads(ref_fn, [p["h64"], p["c64"]])
    # Values: float32 accumulation over the exact (dtype-rounded) inputs, so tight in both dtypes.
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-5)
    # Gradients: fp32 vs float64 finite differences (~1e-8 error). bf16 backward matmuls round
    # their cotangents and results to 8 bits: compare at 2% of the gradient's scale.
    for got, want in ((gc, ec), (gh, eh)):
        if bf16:
            np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-2 * np.abs(want).max())
        else:
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=2e-5)
    # Masked rows never contribute: zero gradient on them.
    assert np.all(gh[~p["w"]] == 0)
    assert np.abs(gh[p["w"]]).max() > 0 and np.abs(gc).max() > 0


@pytest.mark.parametrize("seed,dtype", [(0, jnp.float32), (1, jnp.bfloat16)])
def test_ce(seed, dtype):
    p = random_problem(seed, dtype=dtype)
    check({"type": "ce"}, p, jax.random.key(seed), lambda h, c: ref.ce(h, c, p["y"], p["w"]),
          bf16=dtype == jnp.bfloat16)


@pytest.mark.parametrize("seed,sampler,sharing,dtype", [
    (2, "uniform", "row", jnp.float32), (3, "popularity", "row", jnp.float32),
    (4, "uniform", "batch", jnp.bfloat16), (5, "popularity", "batch", jnp.float32),
    (19, "uniform", "row", jnp.bfloat16)])
def test_ce_neg(seed, sampler, sharing, dtype):
    p = random_problem(seed, dtype=dtype)
    v = p["c64"].shape[0]
    counts = np.concatenate([[0], p["rng"].integers(0, 20, v)])  # [V + 1] by encoded id, some zero
    counts[1] = 5
    # Few negatives over a small catalog: many collisions with the target are exercised.
    cfg = {"type": "ce_neg", "num_negatives": int(p["rng"].integers(3, 2 * v)), "sampler": sampler, "sharing": sharing}
    key = jax.random.key(seed)
    neg = np.asarray(ref.negative_ids(cfg, key, p["h64"].shape[0], v, item_counts=counts))
    assert neg.shape[0] == (1 if sharing == "batch" else p["h64"].shape[0])
    assert (ref.expand(neg, len(p["y"])) == np.where(p["w"], p["y"], 0)[:, None]).any()  # a collision
    check(cfg, p, key, lambda h, c: ref.ce_neg(h, c, p["y"], p["w"], neg, sampler=sampler, counts=counts[1:]),
          item_counts=counts, bf16=dtype == jnp.bfloat16)


@pytest.mark.parametrize("kind,seed,sampler", [("bce", 6, "uniform"), ("bce_plus", 7, "uniform"),
                                               ("bce_plus", 8, "popularity")])
def test_bce_family(kind, seed, sampler):
    p = random_problem(seed)
    v = p["c64"].shape[0]
    counts = p["rng"].integers(1, 30, v)  # [V] by label
    cfg = {"type": kind, "num_negatives": 7, "sampler": sampler}
    key = jax.random.key(seed)
    neg = np.asarray(ref.negative_ids(cfg, key, p["h64"].shape[0], v, item_counts=counts))
    assert neg.shape[1] == (1 if kind == "bce" else 7)
    check(cfg, p, key, lambda h, c: ref.binary(h, c, p["y"], p["w"], neg), item_counts=counts)


@pytest.mark.parametrize("seed,t", [(9, 0.75), (10, 0.0), (11, 1.0)])
def test_gbce(seed, t):
    p = random_problem(seed)
    v = p["c64"].shape[0]
    n = int(p["rng"].integers(1, v))
    cfg = {"type": "gbce", "num_negatives": n, "gbce_t": t}
    key = jax.random.key(seed)
    neg = np.asarray(ref.negative_ids(cfg, key, len(p["y"]), v, labels=p["labels"], where=p["where"]))
    y0 = np.where(p["w"], p["y"], 0)
    assert not (neg == y0[:, None]).any() and neg.min() >= 0 and neg.max() < v
    beta = 1.0 - t * (1.0 - n / (v - 1))
    assert gbce_beta(n, v, t) == pytest.approx(beta)
    check(cfg, p, key, lambda h, c: ref.binary(h, c, p["y"], p["w"], neg, beta=beta))


@pytest.mark.parametrize("seed,mix_x,dtype", [(12, True, jnp.float32), (13, False, jnp.float32),
                                               (14, True, jnp.bfloat16)])
def test_sce(seed, mix_x, dtype):
    p = random_problem(seed, dtype=dtype)
    n, h = p["h64"].shape
    v = p["c64"].shape[0]
    nb, bx, by = int(p["rng"].integers(2, 6)), int(p["rng"].integers(3, n)), int(p["rng"].integers(2, v))
    cfg = {"type": "sce", "sce_n_buckets": nb, "sce_bucket_size_x": bx, "sce_bucket_size_y": by,
           "sce_mix_x": mix_x, "sce_item_chunk": int(p["rng"].integers(3, v + 5))}
    key = jax.random.key(seed)
    # Same random centres as the loss: Omega [N, n_b] (mixtures) or U [n_b, H] from the same key.
    shape = (n, nb) if mix_x else (nb, h)
    omega = np.asarray(h ** -0.25 * jax.random.normal(key, shape, jnp.float32), np.float64)
    rows, items = ref.sce_select(p["h64"], p["c64"], p["w"], omega, mix_x=mix_x, size_x=bx, size_y=by)
    check(cfg, p, key, lambda hh, cc: ref.sce(hh, cc, p["y"], p["w"], rows, items), bf16=dtype == jnp.bfloat16)


def test_sce_with_whole_buckets_equals_full_ce():
    # One bucket holding every row and every item is the full softmax.
    p = random_problem(15)
    n, v = p["h64"].shape[0], p["c64"].shape[0]
    key = jax.random.key(0)
    run = lambda cfg: jax.jit(lambda: loss_of(cfg, p["hidden"], p["classifier"], p["labels"], p["where"],
                                                   key=key))()
    full = run({"type": "ce"})
    for nb in (1, 3):
        got = run({"type": "sce", "sce_n_buckets": nb, "sce_bucket_size_x": n + 10, "sce_bucket_size_y": v + 10})
        np.testing.assert_allclose(float(got), float(full), rtol=1e-6)


@pytest.mark.parametrize("name", ["ce", "ce_neg", "bce", "bce_plus", "gbce", "sce"])
def test_masked_rows_do_not_change_the_loss_and_all_masked_is_zero(name):
    p = random_problem(16)
    cfg = {"type": name, "num_negatives": 4, "sce_n_buckets": 3, "sce_bucket_size_x": 6, "sce_bucket_size_y": 4}
    key = jax.random.key(1)
    loss = jax.jit(lambda hd, lb, wh: loss_of(cfg, hd, p["classifier"], lb, wh, key=key))
    base = loss(p["hidden"], p["labels"], p["where"])
    hidden2 = jnp.where(p["where"][:, None], p["hidden"], -3e3)
    labels2 = jnp.where(p["where"], p["labels"], 10**6)
    other = loss(hidden2, labels2, p["where"])
    np.testing.assert_allclose(float(other), float(base), rtol=1e-6)
    none = jnp.zeros_like(p["where"])
    zero, g = jax.jit(jax.value_and_grad(lambda hd: loss(hd, p["labels"], none)))(p["hidden"])
    assert float(zero) == 0.0 and np.all(np.asarray(g) == 0)


def test_popularity_counts_bound_at_build_time_match_device_counts_and_dtype():
    # The counts are bound when the loss is built (host numpy or a device array: same loss), and
    # the loss traces under jit with bf16 outputs.
    p = random_problem(17, dtype=jnp.bfloat16)
    v = p["c64"].shape[0]
    counts = np.arange(v + 1) % 5
    cfg = {"type": "ce_neg", "num_negatives": 5, "sampler": "popularity"}
    outs = []
    for cn in (counts, jnp.asarray(counts), counts[1:]):  # [V + 1] by encoded id, or [V] by label
        f = jax.jit(lambda hd, cl, k, cn=cn: loss_of(cfg, hd, cl, p["labels"], p["where"], key=k,
                                                          item_counts=cn))
        out = f(p["hidden"], p["classifier"], jax.random.key(2))
        assert out.dtype == jnp.float32 and out.shape == () and np.isfinite(float(out))
        outs.append(float(out))
    assert outs[0] == outs[1] == outs[2]


def test_config_errors():
    p = random_problem(18)
    args = (p["hidden"], p["classifier"], p["labels"], p["where"])
    key = jax.random.key(0)
    with pytest.raises(ConfigError, match="loss.type"):
        loss_of({"type": "softmax"}, *args, key=key)
    with pytest.raises(ValueError, match="num_negatives"):
        loss_of({"type": "ce_neg"}, *args, key=key)
    with pytest.raises(ValueError, match="sampler"):
        loss_of({"type": "ce_neg", "num_negatives": 3, "sampler": "zipf"}, *args, key=key)
    with pytest.raises(ValueError, match="item_counts"):
        loss_of({"type": "ce_neg", "num_negatives": 3, "sampler": "popularity"}, *args, key=key)
    with pytest.raises(ValueError, match="shape"):
        loss_of({"type": "ce_neg", "num_negatives": 3, "sampler": "popularity"}, *args, key=key,
                     item_counts=np.ones(3))
    with pytest.raises(ValueError, match="sharing"):
        loss_of({"type": "bce_plus", "num_negatives": 3, "sharing": "block"}, *args, key=key)
    with pytest.raises(ValueError, match="gbce_t"):
        loss_of({"type": "gbce", "num_negatives": 3, "gbce_t": 1.5}, *args, key=key)
    with pytest.raises(ValueError, match=r"\[N, H\]"):
        loss_of({"type": "ce"}, p["hidden"][None], *args[1:], key=key)
    with pytest.raises(ValueError, match="built for"):  # a classifier of another catalog
        build_loss(LossSpec(type="ce"), n_items=3)(*args, key=key)
    with pytest.raises(ValueError, match="num_negatives"):  # gbce: more negatives than V - 1
        build_loss(LossSpec(type="gbce", num_negatives=p["c64"].shape[0]), n_items=p["c64"].shape[0])
    with pytest.raises(ConfigError, match="gbce"):
        LossSpec(type="gbce", num_negatives=3, sampler="popularity")
    assert sorted(LOSSES) == sorted(["ce", "ce_neg", "bce", "bce_plus", "gbce", "sce", "cce", "cce_neg"])
