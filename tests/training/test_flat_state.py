"""flat_state: the training state packed into a few arrays and back, exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srs_jax.training import flat_state


def _tree(rng):
    """A (state, opt_state)-like pair: big and small float leaves, int and bf16 leaves, scalars,
    PRNG keys, nested dicts / tuples, shapes drawn at random."""
    def arr(*shape, dtype=np.float32):
        return jnp.asarray(rng.normal(size=shape) * 100, dtype)

    big = (int(rng.integers(9, 15)), int(rng.integers(5, 9)))  # >= 45 elements: "big" below
    state = {"emb": arr(*big), "layers": [{"w": arr(3, int(rng.integers(1, 5))), "b": arr(3)}
                                          for _ in range(int(rng.integers(2, 4)))],
             "norm": arr(), "half": arr(4, 2, dtype=jnp.bfloat16),
             "rng": {"key": jax.random.split(jax.random.key(int(rng.integers(1 << 30))), 3),
                     "count": jnp.asarray(rng.integers(0, 99, 3), jnp.uint32)}}
    opt = ({"mu": jax.tree.map(lambda x: x * 2, {"emb": state["emb"], "norm": state["norm"]}),
            "count": jnp.asarray(int(rng.integers(0, 1000)), jnp.int32)},)
    return state, opt


def _same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert jax.random.key_impl(x) == jax.random.key_impl(y)
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert jax.tree.structure(a) == jax.tree.structure(b)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pack_unpack_round_trip_is_exact(seed, monkeypatch):
    monkeypatch.setattr(flat_state, "PACK_MIN_SIZE", 45)
    rng = np.random.default_rng(seed)
    state, opt = _tree(rng)
    spec = flat_state.spec_of(state, opt)
    hash(spec)  # a static jit argument
    buffers = flat_state.pack(state, opt, spec)
    # The two big leaves (emb and its moment) stand alone; the rest share one buffer per dtype
    # (float32, bfloat16, uint32 for keys and counts, int32).
    assert len(buffers) == spec.n_buffers == 2 + 4
    assert all(b.ndim == 1 for b in buffers[2:])
    n_words = sum(int(np.prod(np.shape(x))) for x in jax.tree.leaves((state, opt)))
    n_words += 3  # key data holds 2 words per key
    assert sum(b.size for b in buffers) == n_words
    _same(flat_state.unpack(buffers, spec), (state, opt))
    # Inside a jit: the same buffers, and an update round-trips through them.
    jitted = jax.jit(lambda bufs: flat_state.pack(*jax.tree.map(
        lambda x: x + 1 if jnp.issubdtype(x.dtype, jnp.floating) else x,
        flat_state.unpack(bufs, spec)), spec))
    out = flat_state.unpack(jitted(buffers), spec)
    _same(out, jax.tree.map(lambda x: x + 1 if jnp.issubdtype(x.dtype, jnp.floating) else x,
                            (state, opt)))


def test_spec_depends_only_on_shapes_and_dtypes(monkeypatch):
    monkeypatch.setattr(flat_state, "PACK_MIN_SIZE", 45)
    a = _tree(np.random.default_rng(5))
    b = jax.tree.map(lambda x: x, a)
    assert flat_state.spec_of(*a) == flat_state.spec_of(*b)
