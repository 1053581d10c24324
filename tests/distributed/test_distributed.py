"""Distributed training tests.

Multi-device behaviour runs in ONE subprocess with 8 forced CPU devices
(``multidevice_checks.py``; jax is already imported here by tests/conftest.py, so the flag
cannot be set in this process); each check is reported as its own test. Host-side pieces
(config parsing, sampler tables, padding, errors) are tested in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pallas_kernels
from pallas_kernels import vocab_parallel as vp
from srs_jax import parallel as dist
from srs_jax.config import ConfigError, LossSpec, MeshSpec, load_specs
from srs_jax.losses import build_loss

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "multidevice_checks.py")
CHECK_NAMES = ["cce_loss_and_grads", "cce_neg_loss_and_grads", "cce_neg_pallas", "cce_neg_unbiased",
               "training_and_checkpoints", "loss_objects", "sharded_top_k", "benchmark_script",
               "trainer_end_to_end", "default_mesh"]


@pytest.fixture(scope="module")
def multidevice_results():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, SCRIPT, *CHECK_NAMES], capture_output=True, text=True,
                          timeout=900, env=env, cwd=os.path.dirname(os.path.dirname(HERE)))
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("CHECK {"):
            row = json.loads(line[len("CHECK "):])
            results[row["check"]] = row
    if not results:
        pytest.fail(f"multidevice_checks.py produced no results (rc {proc.returncode}):\n"
                    f"{proc.stderr[-3000:]}")
    return results


@pytest.mark.parametrize("name", CHECK_NAMES)
def test_multidevice(multidevice_results, name):
    row = multidevice_results.get(name)
    assert row is not None, f"check {name} did not run (crashed earlier?)"
    assert row["ok"], row["error"]


def test_checks_cover_all_script_checks():
    src = open(SCRIPT).read()
    defined = {line.split("(")[0][len("def check_"):] for line in src.splitlines()
               if line.startswith("def check_")}
    assert defined == set(CHECK_NAMES)


# ---------------------------------------------------------------------------------------------
# In-process (one device).


def test_mesh_spec_defaults_and_errors():
    cfg = load_specs({}).mesh
    assert (cfg.data, cfg.vocab, cfg.num_processes, cfg.enabled) == (0, 1, 0, True)
    cfg = load_specs({"mesh": {"data": 2, "vocab": 4}, "loss": {"type": "cce"},
                      "train": {"batch_size": 8}}).mesh
    assert (cfg.data, cfg.vocab) == (2, 4)
    with pytest.raises(ConfigError, match="config.mesh.dta is not a known field"):
        load_specs({"mesh": {"dta": 2}})
    mesh = dist.make_mesh(None)
    assert dict(mesh.shape) == {"data": len(jax.devices()), "vocab": 1}
    with pytest.raises(ValueError, match="vocab=3"):
        dist.make_mesh(MeshSpec(vocab=3), devices=jax.devices() * 2)
    with pytest.raises(ValueError, match="data=3"):
        dist.make_mesh(MeshSpec(data=3, vocab=1), devices=jax.devices() * 2)
    with pytest.raises(ConfigError, match="coordinator_address"):
        MeshSpec(num_processes=2)
    assert dist.run_mesh(MeshSpec(enabled=False)) is None


def test_one_device_runs_without_a_mesh():
    # One visible device (this process): the trainer takes the single-device (flat) path.
    if len(jax.devices()) == 1:
        assert dist.run_mesh(MeshSpec()) is None


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


def test_pad_and_unpad_item_table():
    tree = {"item_table": {"embedding": jnp.ones((13, 4))}, "dense": jnp.ones((13, 4)),
            "bias": jnp.ones((4,))}
    padded = dist.pad_item_table(tree, 8)
    assert padded["item_table"]["embedding"].shape == (16, 4)
    assert float(jnp.abs(padded["item_table"]["embedding"][13:]).sum()) == 0.0
    assert padded["dense"].shape == (13, 4)  # only the item table is padded
    back = dist.unpad_item_table(padded, 13)
    np.testing.assert_array_equal(back["item_table"]["embedding"], tree["item_table"]["embedding"])


def test_padded_like_training_matches_place_state_padding():
    tree = {"params": {"item_table": {"embedding": jnp.ones((30, 4))}}}
    for vocab, rows in ((1, 30), (2, 32), (4, 32), (3, 48)):
        got = dist.padded_like_training(MeshSpec(data=1, vocab=vocab), tree)
        assert got["params"]["item_table"]["embedding"].shape == (rows, 4)
        assert dist.pad_multiple(vocab) == (1 if vocab == 1 else np.lcm(vocab, 8))
    assert dist.padded_like_training(MeshSpec(enabled=False, vocab=4), tree) is tree
    assert dist.padded_like_training(MeshSpec(), tree) is tree
    assert dist.table_rows(tree["params"]) == 30


def test_vocab_parallel_input_errors():
    mesh = dist.make_mesh(MeshSpec(data=1, vocab=1), devices=jax.devices()[:1])
    options = lambda **kw: pallas_kernels.VocabParallelOptions(mesh, **kw)  # noqa: E731
    e = jnp.zeros((4, 8))
    t = jnp.zeros((4,), jnp.int32)
    with pytest.raises(ValueError, match="D=|table \\[R, D\\]"):
        pallas_kernels.linear_cross_entropy(e, jnp.zeros((10, 6)), t, vocab_parallel=options())
    with pytest.raises(ValueError, match="must lie inside"):
        pallas_kernels.linear_cross_entropy(e, jnp.zeros((10, 8)), t,
                                            vocab_parallel=options(col_start=1, num_classes=10))
    with pytest.raises(ValueError, match="impl="):
        pallas_kernels.linear_cross_entropy(e, jnp.zeros((10, 8)), t, impl="naive",
                                            vocab_parallel=options())
    with pytest.raises(ValueError, match="num_negatives"):
        pallas_kernels.sampled_linear_cross_entropy(e, jnp.zeros((10, 8)), t, num_negatives=0,
                                                    seed=1, vocab_parallel=options())
    bad_mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("x",))
    with pytest.raises(ValueError, match="axis 'data' is missing"):
        pallas_kernels.linear_cross_entropy(
            e, jnp.zeros((10, 8)), t, vocab_parallel=pallas_kernels.VocabParallelOptions(bad_mesh))


@pytest.mark.parametrize("field, value", [("sharing", "block")])
def test_mesh_loss_refuses_cce_neg_options_the_shard_kernels_lack(field, value):
    mesh = dist.make_mesh(MeshSpec(data=1, vocab=1), devices=jax.devices()[:1])
    with pytest.raises(ValueError, match=f"{field}=") as err:
        build_loss(LossSpec(type="cce_neg", num_negatives=4, **{field: value}), n_items=10, mesh=mesh)
    assert "\n" not in str(err.value)
    build_loss(LossSpec(type="cce_neg", num_negatives=4), n_items=10, mesh=mesh)  # defaults pass


def test_one_device_mesh_matches_linear_cross_entropy():
    rng = np.random.default_rng(0)
    mesh = dist.make_mesh(MeshSpec(data=1, vocab=1), devices=jax.devices()[:1])
    e = jnp.asarray(rng.normal(size=(12, 8)).astype(np.float32))
    tab = jnp.asarray(rng.normal(size=(21, 8)).astype(np.float32))
    t = jnp.asarray(rng.integers(0, 19, 12).astype(np.int32))
    w = jnp.asarray(rng.random(12) > 0.3)
    got = pallas_kernels.linear_cross_entropy(
        e, tab, t, where=w, impl="xla", reduction="none",
        vocab_parallel=pallas_kernels.VocabParallelOptions(mesh, col_start=1, num_classes=19))
    want = pallas_kernels.linear_cross_entropy(e, tab[1:20], t, where=w, reduction="none",
                                               impl="naive")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
