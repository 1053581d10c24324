"""The Mosaic GPU CCE forward (``pallas_kernels/cce/forward_mosaic.py``) vs float64.

CPU: jax's Mosaic GPU interpreter, with its race detector on (warpgroups as threads, the
barriers and the TMA ring simulated; the layout hints and the register-resident E operand are
GPU-only and not exercised there, and the catalog tile is stored transposed because the
interpreter's wgmma takes no transposed operand). GPU (`gpu` marker): the compiled kernel on a Hopper device.

Tolerance for the LSE (natural log): |err| <= 8 eps32 (|lse| + max_j |z_j|) + 2e-6 * steps, the
float32 rounding of logits of size |z| plus one rounding of the running sum per catalog step
(its relative error becomes an absolute one in the log).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import CCEConfig, linear_cross_entropy
from pallas_kernels.cce import forward_mosaic
from tests.kernels.test_cce import EPS32, _rng

DTYPES = {"bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _inputs(rng, n, v, d, dtype, scale=1.0):
    e = jnp.asarray(rng.normal(size=(n, d)) * scale / d ** 0.25, dtype)
    c = jnp.asarray(rng.normal(size=(v, d)) * scale / d ** 0.25, dtype)
    t = jnp.asarray(rng.integers(0, v, n), jnp.int32)
    return e, c, t


def _reference(e, c, t):
    """float64 (lse [n], target logits [n], |lse| + max |z| [n])."""
    z = np.asarray(e, np.float64) @ np.asarray(c, np.float64).T
    m = z.max(axis=1)
    lse = m + np.log(np.exp(z - m[:, None]).sum(axis=1))
    return lse, z[np.arange(len(lse)), np.asarray(t)], np.abs(lse) + np.abs(z).max(axis=1)


def _lse_tol(zmag, v: int, block_v: int = 64):
    """The tolerance of the module docstring, per row."""
    return 8 * EPS32 * zmag + 2e-6 * -(-v // block_v)


def _check_lse(e, c, t, *, interpret, **tiles):
    n = e.shape[0]
    lse_ref, z_t, zmag = _reference(e, c, t)
    cta_rows = tiles.get("block_n", 64) * tiles.get("compute_wgs", 2)
    n_pad = -(-n // cta_rows) * cta_rows
    e_pad = jnp.pad(e, ((0, n_pad - n), (0, 0)))
    shift = jnp.pad(jnp.asarray(z_t, jnp.float32), (0, n_pad - n))
    got = np.asarray(forward_mosaic.lse_rows(e_pad, c, shift, interpret=interpret, **tiles),
                     np.float64)[:n]
    tol = _lse_tol(zmag, c.shape[0], tiles.get("block_v", 64))
    err = np.abs(got - lse_ref)
    assert np.all(err <= tol), (err.max(), (err - tol).max())


def _races_found() -> bool:
    from jax._src.pallas.mosaic_gpu.interpret import interpret_pallas_call
    return bool(interpret_pallas_call.get_races().races_found)


# ---------------------------------------------------------------- CPU: the interpreter

# (n, v, d, dtype, tiles): ragged rows and catalogs (V % 8 == 0, the kernel's requirement, but
# a ragged last tile), a catalog of whole tiles, one smaller than a tile, a ring deeper than the
# catalog, no ping-pong, and the ring depths 1, 3 and 4 (2 is refused: see forward_mosaic).
INTERPRET_CASES = [
    (101, 304, 64, "bfloat16", dict(slots=3)),
    (200, 128, 64, "float16", dict(slots=5)),  # two steps: a ring of two, not reused
    (129, 1000, 128, "bfloat16", dict(slots=4, pingpong=False)),
    (64, 264, 64, "bfloat16", dict(block_v=128, slots=1)),
    (66, 40, 64, "bfloat16", dict(slots=3)),
    (130, 184, 256, "float16", dict(slots=3)),
    (150, 200, 64, "bfloat16", dict(slots=3, pingpong=False, compute_wgs=3)),
    (70, 136, 128, "float16", dict(slots=4, pingpong=False, compute_wgs=1)),
]


@pytest.mark.parametrize("n,v,d,dtype_name,tiles", INTERPRET_CASES)
def test_mosaic_interpret_lse_matches_float64(n, v, d, dtype_name, tiles):
    rng = _rng("lse", n, v, d, dtype_name)
    e, c, t = _inputs(rng, n, v, d, DTYPES[dtype_name])
    _check_lse(e, c, t, interpret=True, **tiles)
    assert not _races_found()


def test_mosaic_interpret_loss_through_the_api_matches_float64():
    """The undifferentiated loss with ``fwd_impl="mosaic"``: masked rows, ragged shapes."""
    rng = _rng("api")
    n, v, d = 93, 520, 64
    e, c, t = _inputs(rng, n, v, d, jnp.bfloat16)
    where = jnp.asarray(rng.random(n) > 0.3)
    lse_ref, z_t, zmag = _reference(e, c, t)
    got = linear_cross_entropy(e, c, t, where=where, reduction="none", impl="interpret",
                               config=CCEConfig(fwd_impl="mosaic"))
    ref = np.where(np.asarray(where), lse_ref - z_t, 0.0)
    tol = _lse_tol(zmag, v)
    assert np.all(np.abs(np.asarray(got, np.float64) - ref) <= tol)
    assert np.all(np.asarray(got)[~np.asarray(where)] == 0.0)


def test_mosaic_interpret_overflow_falls_back_to_running_max():
    """Rows with a logit ~100 above their target's overflow the shifted sum: the kernel returns
    inf there and the loss is redone with the running-max (Triton) kernel."""
    rng = _rng("overflow")
    n, v, d = 40, 152, 64
    e, c, t = _inputs(rng, n, v, d, jnp.bfloat16)
    e = e.at[: n // 2, 0].set(10.0)
    c = c.at[:, 0].set(0.0).at[v // 2, 0].set(10.0)
    t = t.at[: n // 2].set(v // 2 + 1)
    lse_ref, z_t, zmag = _reference(e, c, t)
    shift = jnp.pad(jnp.asarray(z_t, jnp.float32), (0, 128 - n))
    lse = np.asarray(forward_mosaic.lse_rows(jnp.pad(e, ((0, 128 - n), (0, 0))), c, shift,
                                             interpret=True))[:n]
    assert np.all(np.isinf(lse[: n // 2])) and np.all(np.isfinite(lse[n // 2:]))
    got = linear_cross_entropy(e, c, t, reduction="none", impl="interpret",
                               config=CCEConfig(fwd_impl="mosaic"))
    tol = _lse_tol(zmag, v)
    assert np.all(np.abs(np.asarray(got, np.float64) - (lse_ref - z_t)) <= tol)


def test_mosaic_falls_back_to_triton_where_unsupported():
    """float32 inputs, D not a multiple of 64 and V not a multiple of 8 take the Triton forward,
    with the same result; the kernel itself refuses them with the reason."""
    rng = _rng("unsupported")
    for dtype, v, d in ((jnp.float32, 96, 64), (jnp.bfloat16, 96, 48), (jnp.bfloat16, 99, 64)):
        e, c, t = _inputs(rng, 37, v, d, dtype)
        assert not forward_mosaic.supported(v, d, dtype)
        kw = dict(reduction="none", impl="interpret")
        a = linear_cross_entropy(e, c, t, config=CCEConfig(fwd_impl="mosaic"), **kw)
        b = linear_cross_entropy(e, c, t, **kw)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        with pytest.raises(ValueError, match="use the Triton forward"):
            forward_mosaic.lse_rows(jnp.pad(e, ((0, 128 - 37), (0, 0))), c,
                                    jnp.zeros(128, jnp.float32), interpret=True)


def test_default_picks_mosaic_only_where_measured_faster(monkeypatch):
    """On a Hopper GPU (faked here) the default forward is Mosaic at D = 128 / 256, bf16 or f16,
    V % 8 == 0 and a batch of at least one CTA per SM; Triton everywhere else."""
    from pallas_kernels.cce import common

    from pallas_kernels.cce.config import get_default

    assert common.default_plan(131072, 10**6, 128).fwd_impl == "triton"  # CPU: never
    monkeypatch.setattr(common, "mosaic_gpu_available", lambda: True)
    pick = lambda n, v, d, size=2: common.default_plan(n, v, d, size).fwd_impl
    assert pick(131072, 10**6, 128) == "mosaic" and pick(131072, 10**6, 256) == "mosaic"
    cfg = common.default_plan(131072, 10**6, 128)
    assert (cfg.mosaic_block_n, cfg.mosaic_block_v, cfg.mosaic_slots, cfg.mosaic_lhs_regs) == \
        common.MOSAIC_DEFAULTS[128]
    public = get_default(131072, 10**6, 128, jnp.bfloat16)
    assert (public.fwd_impl, public.fwd_block_n, public.fwd_block_v) == ("mosaic", 128, 64)
    assert pick(131072, 10**6, 64) == "triton"        # Triton measured faster at D = 64
    assert pick(131072, 10**6 + 3, 128) == "triton"   # V % 8 != 0
    assert pick(131072, 10**6, 128, 4) == "triton"    # float32
    assert pick(2 * 128 * 132 - 1, 10**6, 128) == "triton"  # under one CTA per SM
    assert pick(2 * 128 * 132, 10**6, 128) == "mosaic"


@pytest.mark.parametrize("kwargs,match", [
    (dict(block_n=32), "multiples of 64"),
    (dict(block_v=96), "multiples of 64"),
    (dict(slots=2), "slots=2 is refused"),
    (dict(compute_wgs=3), "2 for the ping-pong"),
])
def test_mosaic_bad_tiles_raise(kwargs, match):
    e, c, _ = _inputs(_rng("bad"), 128, 304, 64, jnp.bfloat16)
    with pytest.raises(ValueError, match=match):
        forward_mosaic.lse_rows(e, c, jnp.zeros(128, jnp.float32), interpret=True, **kwargs)


def test_bad_fwd_impl_raises():
    with pytest.raises(ValueError, match="fwd_impl"):
        CCEConfig(fwd_impl="cuda")


def test_mosaic_tiles_through_the_config(monkeypatch):
    """With the Mosaic forward, CCEConfig.fwd_block_n / fwd_block_v are its rows per compute
    warpgroup and catalog tile; block_n / block_v (the backward's) do not touch them."""
    from pallas_kernels.cce import common, ops

    monkeypatch.setattr(common, "mosaic_gpu_available", lambda: True)
    plan = ops.resolve_plan(131072, 10**6, 128, 2, CCEConfig(block_n=32, fwd_block_v=128))
    assert (plan.fwd_impl, plan.mosaic_block_n, plan.mosaic_block_v) == ("mosaic", 128, 128)
    assert (plan.bwd_block_n, plan.fde_block_n, plan.fwd_block_n) == (32, 32, 128)
    plan = ops.resolve_plan(4096, 10**6, 64, 2, CCEConfig(fwd_impl="mosaic", fwd_block_n=128))
    assert (plan.fwd_impl, plan.mosaic_block_n, plan.mosaic_slots) == ("mosaic", 128, 3)


# ---------------------------------------------------------------- GPU: the compiled kernel

def _is_hopper() -> bool:
    dev = jax.devices()[0]
    return dev.platform == "gpu" and str(getattr(dev, "compute_capability", "")).startswith("9")


# Tiles whose E tiles and catalog ring, (2 block_n + slots block_v) D 2 B, fit the 227 KB of
# shared memory at each D.
GPU_TILES = [
    (64, dict(block_n=64, block_v=64, slots=6)),
    (64, dict(block_n=128, block_v=64, slots=6, lhs_regs=True)),
    (128, dict(block_n=128, block_v=64, slots=8)),
    (128, dict(block_n=128, block_v=64, slots=8, lhs_regs=True)),
    (128, dict(block_n=64, block_v=128, slots=4, pingpong=False)),
    (256, dict(block_n=64, block_v=64, slots=3)),
    (256, dict(block_n=64, block_v=64, slots=4, lhs_regs=True)),
    (64, dict(block_n=64, block_v=64, slots=6, lhs_regs=True, pingpong=False, compute_wgs=3)),
]


@pytest.mark.gpu
@pytest.mark.parametrize("d,tiles", GPU_TILES)
@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16"])
def test_gpu_mosaic_lse_matches_float64(d, tiles, dtype_name):
    if not _is_hopper():
        pytest.skip("Mosaic GPU forward: Hopper only")
    rng = _rng("gpu", d, repr(tiles), dtype_name)
    e, c, t = _inputs(rng, 1000, 5032, d, DTYPES[dtype_name], scale=2.0)
    _check_lse(e, c, t, interpret=False, **tiles)


@pytest.mark.gpu
@pytest.mark.parametrize("d", [128, 256])
@pytest.mark.parametrize("slots", [1, 3, 4])
@pytest.mark.parametrize("pingpong", [True, False])
def test_gpu_mosaic_ring_depths_match_float64(d, slots, pingpong):
    """Every ring depth the kernel accepts, with and without ping-pong (a depth of 2 gave wrong
    sums at D = 256 and is refused)."""
    if not _is_hopper():
        pytest.skip("Mosaic GPU forward: Hopper only")
    e, c, t = _inputs(_rng("ring", d), 1000, 5032, d, jnp.bfloat16, scale=2.0)
    _check_lse(e, c, t, interpret=False, block_n=64, block_v=64, slots=slots, pingpong=pingpong)


@pytest.mark.gpu
@pytest.mark.parametrize("d", [128, 256])
def test_gpu_mosaic_loss_and_overflow_fallback_match_float64(d):
    if not _is_hopper():
        pytest.skip("Mosaic GPU forward: Hopper only")
    rng = _rng("gpu-api", d)
    n, v = 777, 20008
    e, c, t = _inputs(rng, n, v, d, jnp.bfloat16)
    e = e.at[:5, 0].set(10.0)  # five rows overflow: the batch is redone with the running max
    c = c.at[:, 0].set(0.0).at[v // 2, 0].set(10.0)
    t = t.at[:5].set(v // 2 + 1)
    lse_ref, z_t, zmag = _reference(e, c, t)
    got = jax.jit(lambda e, c, t: linear_cross_entropy(
        e, c, t, reduction="none", impl="pallas",
        config=CCEConfig(fwd_impl="mosaic")))(e, c, t)
    tol = _lse_tol(zmag, v)
    assert np.all(np.abs(np.asarray(got, np.float64) - (lse_ref - z_t)) <= tol)


@pytest.mark.gpu
@pytest.mark.parametrize("d", [128, 256])
def test_gpu_default_forward_is_mosaic_and_agrees_with_triton(d):
    """At a batch past the default's threshold the default loss runs the Mosaic forward and
    agrees with the (float64-checked) Triton forward to float32 rounding (per row: 8 eps32 of
    |lse| + max |z|, bounded here by 64 eps32 |lse|, plus 2e-6 per catalog step)."""
    if not _is_hopper():
        pytest.skip("Mosaic GPU forward: Hopper only")
    from pallas_kernels.cce import common

    n, v = 2 * 128 * 132 + 1000, 100_000
    assert common.default_plan(n, v, d).fwd_impl == "mosaic"
    e, c, t = _inputs(_rng("default", d), n, v, d, jnp.bfloat16)
    loss = lambda cfg: jax.jit(lambda e, c, t: linear_cross_entropy(
        e, c, t, reduction="none", impl="pallas", config=cfg))(e, c, t)
    jaxpr = str(jax.make_jaxpr(lambda e, c, t: linear_cross_entropy(
        e, c, t, reduction="none", impl="pallas"))(e, c, t))
    assert "wgmma" in jaxpr  # the Mosaic kernel (the Triton one has no wgmma primitive)
    got = np.asarray(loss(None), np.float64)
    ref = np.asarray(loss(CCEConfig(fwd_impl="triton")), np.float64)
    err = np.abs(got - ref)
    assert np.all(err <= 64 * EPS32 * (np.abs(ref) + 20.0) + 2e-6 * -(-v // 64)), err.max()
