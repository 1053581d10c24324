"""Distributed training tests.

Multi-device behaviour runs in ONE subprocess with 8 forced CPU devices
(``multidevice_checks.py``; jax is already imported here by tests/conftest.py, so the flag
cannot be set in this process); each check is reported as its own test. Host-side pieces
(config parsing, sampler tables, padding, errors) are tested in-process.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srs_jax import parallel as dist
from srs_jax.config import ConfigError, LossSpec, MeshSpec, load_specs
from srs_jax.losses import build_loss
from tests.multidevice import run_checks

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "multidevice_checks.py")
# The kernels' own multi-device checks (losses and gradients against float64, the sampler's
# unbiasedness) are in tests/kernels/vocab_parallel_checks.py; these cover the srs_jax layers.
CHECK_NAMES = ["training_and_checkpoints", "loss_objects", "sharded_top_k", "benchmark_script",
               "trainer_end_to_end", "default_mesh"]


@pytest.fixture(scope="module")
def multidevice_results():
    results, proc = run_checks(SCRIPT, CHECK_NAMES, timeout=900)
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


@pytest.mark.parametrize("field, value", [("sharing", "block")])
def test_mesh_loss_refuses_cce_neg_options_the_shard_kernels_lack(field, value):
    mesh = dist.make_mesh(MeshSpec(data=1, vocab=1), devices=jax.devices()[:1])
    with pytest.raises(ValueError, match=f"{field}=") as err:
        build_loss(LossSpec(type="cce_neg", num_negatives=4, **{field: value}), n_items=10, mesh=mesh)
    assert "\n" not in str(err.value)
    build_loss(LossSpec(type="cce_neg", num_negatives=4), n_items=10, mesh=mesh)  # defaults pass
