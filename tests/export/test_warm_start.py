"""Warm start from an earlier run: item rows follow their raw ids, the rest is copied, mismatches
stop with one line naming the parameter."""

from __future__ import annotations

import dataclasses
import os
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from srs_jax import data as data_lib
from srs_jax import models as models_lib
from srs_jax.training import checkpoints as ckpt_lib
from srs_jax.training import evaluation
from srs_jax.training import steps as steps_lib
from srs_jax.data.synthetic import generate
from srs_jax.training.saved_run import load_run
from srs_jax.training.warm_start import WarmStartError, match_items, param_names, warm_start

from export.runs import tiny_config, train_run


def _fresh(model_config, n_items, seed=7):
    model = models_lib.build_model(model_config, n_items, rngs=nnx.Rngs(params=seed, dropout=seed + 1))
    return steps_lib.split_model(model)


def _leaves(params):
    return dict(zip(param_names(params), (np.asarray(x) for x in jax.tree.leaves(params))))


def test_match_items_by_raw_id():
    old = np.array([-1, 10, 20, 30, 40])
    new = np.array([-1, 40, 5, 10, 99, 30])
    np.testing.assert_array_equal(match_items(old, new), [-1, 4, -1, 1, -1, 3])
    # Integers against strings: compared as text.
    np.testing.assert_array_equal(match_items(old, np.array(["", "30", "x", "10"])), [-1, 3, -1, 1])
    np.testing.assert_array_equal(match_items(np.array(["", "b", "a"]), np.array(["", "a", "c", "b"])),
                                  [-1, 2, -1, 1])


def test_same_catalog_takes_every_weight(tiny_run):
    run = load_run(tiny_run("sasrec"))
    _, state = _fresh(run.config.model, run.dataset.n_items)
    params, stats = warm_start(run.workdir, run.dataset.item_raw_ids, state.params)
    assert jax.tree.structure(params) == jax.tree.structure(state.params)
    old, got = _leaves(run.state.params), _leaves(params)
    assert old.keys() == got.keys()
    for name in old:
        np.testing.assert_array_equal(got[name], old[name], err_msg=name)
    v = run.dataset.n_items
    assert (stats["items_kept"], stats["items_new"], stats["items_dropped"]) == (v, 0, 0)
    assert stats["init_from"] == os.path.abspath(run.workdir) and stats["checkpoint_epoch"] == 1
    assert stats["checkpoint_step"] > 0 and stats["item_tables"] == ["item_table/embedding"]


@pytest.mark.parametrize("model", ["sasrec", "bert4rec"])
def test_items_follow_their_raw_ids(model, tiny_run):
    """A new catalog: a shuffled subset of the old items plus items never seen before."""
    run = load_run(tiny_run(model))
    old_raw = np.asarray(run.dataset.item_raw_ids)
    old_v = len(old_raw) - 1
    rng = np.random.default_rng(0)
    kept = rng.choice(np.arange(1, old_v + 1), size=old_v - 11, replace=False)
    fresh_ids = old_raw[1:].max() + 1 + np.arange(17)
    new_raw = np.concatenate([old_raw[:1], rng.permutation(np.concatenate([old_raw[kept], fresh_ids]))])
    new_v = len(new_raw) - 1
    _, state = _fresh(run.config.model, new_v)
    params, stats = warm_start(run.workdir, new_raw, state.params)
    assert (stats["items_kept"], stats["items_new"], stats["items_dropped"]) == (old_v - 11, 17, 11)

    old, init, got = _leaves(run.state.params), _leaves(state.params), _leaves(params)
    table = got["item_table/embedding"]
    special = 1 if model == "sasrec" else 2  # padding (+ [mask])
    assert table.shape == (new_v + special, run.config.model.hidden)
    position = {v: i for i, v in enumerate(old_raw.tolist())}
    for new_id in range(1, new_v + 1):
        raw = new_raw[new_id].item()
        if raw in position:
            np.testing.assert_array_equal(table[new_id], old["item_table/embedding"][position[raw]])
        else:  # the new model's own initialisation of that row
            np.testing.assert_array_equal(table[new_id], init["item_table/embedding"][new_id])
    np.testing.assert_array_equal(table[0], old["item_table/embedding"][0])
    np.testing.assert_array_equal(table[new_v + 1:], old["item_table/embedding"][old_v + 1:])
    for name in old:
        if name != "item_table/embedding":
            np.testing.assert_array_equal(got[name], old[name], err_msg=name)
    # The warm-started model runs and scores the new catalog.
    graphdef, _ = _fresh(run.config.model, new_v)
    merged = steps_lib.merge_model(graphdef, state._replace(params=params))
    hidden = merged(np.array([[0, 0, 3, new_v, 1, 2, 5, 4]], np.int32)[:, -run.config.model.max_len:],
                    deterministic=True)
    assert np.isfinite(np.asarray(hidden)).all() and merged.output_embeddings().shape[0] == new_v


def test_mismatches_stop_with_the_parameter_name(tiny_run, tmp_path):
    run = load_run(tiny_run("sasrec"))
    v = run.dataset.n_items
    wider = dataclasses.replace(run.config.model, hidden=32)
    _, state = _fresh(wider, v)
    with pytest.raises(WarmStartError, match=r"parameter blocks/0/\S+ has shape \(48,\) in the old run "
                                             r"but \(96,\) in the new model") as e:
        warm_start(run.workdir, run.dataset.item_raw_ids, state.params)
    assert "\n" not in str(e.value)
    other = load_run(tiny_run("bert4rec")).config.model
    _, state = _fresh(other, v)
    with pytest.raises(WarmStartError, match=r"parameter \S+ of the new model is not in the old run "
                                             r"\(sasrec\)"):
        warm_start(run.workdir, run.dataset.item_raw_ids, state.params)
    with pytest.raises(WarmStartError, match="its data now gives 40 items but its checkpoint has"):
        warm_start(run.workdir, run.dataset.item_raw_ids, _fresh(run.config.model, v)[1].params,
                   old_item_raw_ids=run.dataset.item_raw_ids[:41])
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    with pytest.raises(WarmStartError, match="is not a run folder"):
        warm_start(str(empty), run.dataset.item_raw_ids, state.params)
    (empty / "config.json").write_text("{}")
    with pytest.raises(WarmStartError, match="has no best checkpoint yet"):
        warm_start(str(empty), run.dataset.item_raw_ids, state.params)
    assert sorted(os.listdir(empty)) == ["config.json"]


def test_refit_on_a_newer_snapshot_starts_ahead_of_a_cold_start(tmp_path):
    """An old run on the first 70% of a growing world; on the full data, the warm-started
    parameters rank the validation targets far better than a fresh initialisation."""
    def config(until, epochs):
        c = tiny_config(tmp_path, n_items=120, epochs=epochs, growth=1.0, mean_gap_s=3 * 3600.0)
        c.data.synthetic.n_users = 400
        c.data.time_until = until
        return c

    _, _, time = generate(config(None, 1).data.synthetic)
    old_dir = train_run(config(float(np.quantile(time, 0.7)), 4), tmp_path / "old")
    new_config = config(None, 1)
    new = data_lib.prepare_dataset(new_config.data)
    graphdef, state = _fresh(new_config.model, new.n_items, seed=new_config.seed)
    params, stats = warm_start(old_dir, new.item_raw_ids, state.params)
    assert stats["items_new"] > 0 and stats["items_kept"] > 0.8 * new.n_items

    def ndcg(st):
        out, _ = evaluation.evaluate_model(graphdef, st, new.val, config=new_config,
                                           n_items=new.n_items,
                                           encode_fn=steps_lib.make_encode_step(new_config.model))
        return out["ndcg@10"]

    cold, warm = ndcg(state), ndcg(state._replace(params=params))
    assert warm > 3 * cold and warm > 0.02, (warm, cold)


def test_table_saved_padded_for_a_sharded_mesh(tiny_run, tmp_path):
    """A run trained with a vocab-sharded table saved it with zero rows past the catalog: they are
    cut back; non-zero rows there mean the old data changed, which stops with one line."""
    run = load_run(tiny_run("sasrec"))
    v = run.dataset.n_items

    def save(pad_value, name):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(os.path.join(run.workdir, "config.json"), folder / "config.json")
        table = np.asarray(run.state.params["item_table"]["embedding"][...])
        padded = np.concatenate([table, np.full((5, table.shape[1]), pad_value, table.dtype)])
        tree = {"params": jax.tree.map(np.asarray, nnx.to_pure_dict(run.state.params))}
        tree["params"]["item_table"]["embedding"] = padded
        ckpts = ckpt_lib.RunCheckpoints(str(folder))
        ckpts.save_best(9, tree, {"epoch": 3})
        ckpts.close()
        return str(folder)

    _, state = _fresh(run.config.model, v)
    params, stats = warm_start(save(0.0, "zeros"), run.dataset.item_raw_ids, state.params,
                               old_item_raw_ids=run.dataset.item_raw_ids)
    np.testing.assert_array_equal(_leaves(params)["item_table/embedding"],
                                  _leaves(run.state.params)["item_table/embedding"])
    assert (stats["checkpoint_step"], stats["checkpoint_epoch"]) == (9, 3)
    with pytest.raises(WarmStartError, match=f"its data now gives {v} items but its checkpoint has "
                                             f"{v + 6} rows in item_table/embedding"):
        warm_start(save(0.5, "stale"), run.dataset.item_raw_ids, state.params,
                   old_item_raw_ids=run.dataset.item_raw_ids)
