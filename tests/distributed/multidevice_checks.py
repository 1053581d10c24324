"""Multi-device checks on 8 forced CPU devices, run in a subprocess by ``test_distributed.py``.

``python tests/distributed/multidevice_checks.py [NAME ...]`` runs the named checks (default all)
and prints one line per check: ``CHECK {"check": name, "ok": bool, "error": str, "seconds": s}``.
XLA_FLAGS must be set before jax is imported, which is why this is a separate process.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

# Compiles dominate this file's time: keep them in the repo's (git-ignored) .cache between runs.
jax.config.update("jax_compilation_cache_dir", os.path.abspath(os.path.join(
    os.path.dirname(__file__), "..", "..", ".cache", "jax_distributed_tests")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
import numpy as np  # noqa: E402

import pallas_kernels  # noqa: E402
from srs_jax import parallel as dist  # noqa: E402
from srs_jax.config import LossSpec, MeshSpec, ModelSpec, TrainSpec, load_specs  # noqa: E402
from srs_jax.config.presets import synthetic_config  # noqa: E402
from srs_jax.data import Sequences  # noqa: E402
from srs_jax.losses import build_loss, kernel_seed  # noqa: E402
from srs_jax.metrics import top_k_items  # noqa: E402
from srs_jax.training import checkpoints as ckpt_lib  # noqa: E402
from srs_jax.training import loop  # noqa: E402
from srs_jax.training import steps as steps_lib  # noqa: E402
from srs_jax.training.state import build_state  # noqa: E402
from tests.multidevice import assert_close  # noqa: E402

MESHES = [(8, 1), (1, 8), (2, 4)]


def _model_config(name="sasrec"):
    return ModelSpec(name=name, hidden=16, num_blocks=1, num_heads=2, dropout=0.1, max_len=6,
                     compute_dtype="float32", mask_prob=0.3)


def _train_config():
    # eps=1e-4: parameters whose true gradient is 0 (e.g. the attention key bias) get float noise
    # that Adam with a tiny eps would blow up to +-lr steps, masking the comparison.
    return TrainSpec(lr=1e-2, b1=0.9, b2=0.98, eps=1e-4, warmup_steps=0, schedule="constant",
                     grad_clip=0.0)


def _batches(rng, n_steps, batch, length, v):
    out = []
    for _ in range(n_steps):
        seq = rng.integers(1, v + 1, (batch, length + 1)).astype(np.int32)
        cut = rng.integers(0, length, batch)  # left padding of random length
        pos = np.arange(length + 1)[None, :]
        seq = np.where(pos < cut[:, None], 0, seq)
        out.append({"inputs": seq[:, :-1], "targets": np.where(seq[:, :-1] > 0, seq[:, 1:], 0)})
    return out


def _run_steps(loss_cfg, v, mesh_shape, batches, model_name="sasrec"):
    """Params after len(batches) steps: single device if mesh_shape is None, else sharded."""
    model_cfg = _model_config(model_name)
    graphdef, state = build_state(model_cfg, v, seed=0)
    opt = steps_lib.make_optimizer(_train_config(), 100)
    opt_state = opt.init(state.params)
    key0 = jax.random.key(7)
    if mesh_shape is None:
        step = steps_lib.make_train_step(model_cfg, build_loss(loss_cfg, n_items=v), opt)
        place = lambda b: {k: jnp.asarray(x) for k, x in b.items()}  # noqa: E731
    else:
        # As the trainer does it: padded, sharded state, the loss built with the mesh and the
        # one step builder given the mesh (the step takes host batches).
        mesh = dist.make_mesh(MeshSpec(data=mesh_shape[0], vocab=mesh_shape[1]))
        state, opt_state = dist.place_state(state, opt_state, mesh)
        loss = build_loss(loss_cfg, n_items=v, mesh=mesh)
        step = steps_lib.make_train_step(model_cfg, loss, opt, mesh=mesh, state=state,
                                         opt_state=opt_state)
        rows = v + (2 if model_name == "bert4rec" else 1)  # BERT4Rec: a [mask] row V + 1
        expect_rows = -(-rows // 8) * 8 if mesh_shape[1] > 1 else rows
        if dist.table_rows(state.params) != expect_rows:
            raise AssertionError(f"table rows {dist.table_rows(state.params)} != {expect_rows}")
        place = lambda b: b  # noqa: E731
    losses = []
    for i, b in enumerate(batches):
        state, opt_state, m = step(graphdef, state, opt_state, place(b), jax.random.fold_in(key0, i))
        losses.append(float(m["loss"]))
    params = jax.device_get(dist.unpad_item_table(
        state.params, v + (2 if model_name == "bert4rec" else 1)))
    return params, losses, state, opt_state


def _checkpoint_restore_on_other_mesh(state, opt_state, v):
    """Orbax (the trainer's RunCheckpoints) saves sharded state on 2x4, restores on 1x8 and 8x1."""
    saved = jax.device_get(ckpt_lib.checkpoint_tree(state, opt_state))
    with tempfile.TemporaryDirectory() as tmp:
        ck = ckpt_lib.RunCheckpoints(tmp)
        ck.save_latest(2, ckpt_lib.checkpoint_tree(state, opt_state), {"epoch": 1})
        for shape in [(1, 8), (8, 1)]:
            _, fresh = build_state(_model_config(), v, seed=3)
            opt = steps_lib.make_optimizer(_train_config(), 100)
            mesh = dist.make_mesh(MeshSpec(data=shape[0], vocab=shape[1]))
            fresh, fresh_opt = dist.place_state(fresh, opt.init(fresh.params), mesh, multiple=8)
            tree, meta = ck.restore_latest(ckpt_lib.checkpoint_tree(fresh, fresh_opt))
            if meta["epoch"] != 1:
                raise AssertionError(f"meta {meta}")
            want_sh = dist.state_shardings(tree, mesh)
            for (path, x), s in zip(jax.tree_util.tree_leaves_with_path(tree), jax.tree.leaves(want_sh)):
                if not x.sharding.is_equivalent_to(s, x.ndim):
                    raise AssertionError(f"{jax.tree_util.keystr(path)} restored as {x.sharding}, "
                                         f"expected {s}")
            for x, y in zip(jax.tree.leaves(jax.device_get(tree)), jax.tree.leaves(saved)):
                np.testing.assert_array_equal(x, y)
        ck.close()


def check_training_and_checkpoints():
    """A few Adam steps on (8 data), (8 vocab), (2 data x 4 vocab) equal one device's (cce, SASRec;
    BERT4Rec on 2x4); the 2x4 state is saved with the trainer's Orbax code and restored on 1x8
    and 8x1."""
    rng = np.random.default_rng(4)
    v = 29  # table 30 rows: padded to 32 on the mesh
    batches = _batches(rng, 3, 16, 6, v)
    cfg = LossSpec(type="cce", impl="xla")
    ref, ref_losses, _, _ = _run_steps(cfg, v, None, batches)
    for shape in MESHES:
        got, losses, state, opt_state = _run_steps(cfg, v, shape, batches)
        assert_close(f"losses {shape}", losses, ref_losses, 1e-5, 1e-6)
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(ref)):
            assert_close(f"mesh {shape} {jax.tree_util.keystr(path)}", a, b, 2e-4, 2e-5)
        table = [x for p, x in jax.tree_util.tree_leaves_with_path(state.params)
                 if "item_table" in jax.tree_util.keystr(p)][0]
        if table.sharding.spec[0] != ("vocab" if shape[1] > 1 else None) and shape[1] > 1:
            raise AssertionError(f"table sharding {table.sharding.spec} on mesh {shape}")
        if shape[1] > 1 and np.any(np.asarray(table)[v + 1:] != 0):
            raise AssertionError("padding rows of the item table moved during training")
        if shape == (2, 4):
            _checkpoint_restore_on_other_mesh(state, opt_state, v)
    # BERT4Rec: table rows V + 2 (the [mask] row is an input but no class), cloze targets.
    ref, ref_losses, _, _ = _run_steps(cfg, v, None, batches, "bert4rec")
    got, losses, _, _ = _run_steps(cfg, v, (2, 4), batches, "bert4rec")
    assert_close("bert4rec losses (2, 4)", losses, ref_losses, 1e-5, 1e-6)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(ref)):
        assert_close(f"bert4rec (2, 4) {jax.tree_util.keystr(path)}", a, b, 2e-4, 2e-5)


def check_loss_objects():
    """A loss built with the mesh reads the whole sharded table (row v = item v) and gives the
    single-device loss on ``output_embeddings()`` (cce: value and gradients); cce_neg equals the
    kernels' vocabulary-parallel call; losses without a vocabulary-parallel version refuse a
    vocab axis; nothing is kept between calls (a second trace gives the same value)."""
    rng = np.random.default_rng(8)
    v, rows, n, d = 37, 40, 32, 16
    mesh = dist.make_mesh(MeshSpec(data=2, vocab=4))
    table = (rng.normal(size=(rows, d)) * 0.5).astype(np.float32)
    table[v + 1:] = 0.0
    hidden = jnp.asarray(rng.normal(size=(n, d)).astype(np.float32))
    labels = jnp.asarray(rng.integers(0, v, n).astype(np.int32))
    where = jnp.asarray(rng.random(n) > 0.2)
    key = jax.random.key(3)
    counts = rng.integers(1, 7, v + 1)
    counts[0] = 0  # by encoded id: slot 0 is padding
    for spec in (LossSpec(type="cce", impl="xla"),
                 LossSpec(type="cce_neg", num_negatives=9, sampler="uniform"),
                 LossSpec(type="cce_neg", num_negatives=9, sampler="popularity")):
        loss = build_loss(spec, n_items=v, item_counts=counts, mesh=mesh)
        if not (loss.reads_table and loss.keeps_classifier_dtype):
            raise AssertionError(f"{spec.type} on a mesh must read the whole table as it is")
        fn = jax.jit(jax.value_and_grad(lambda tab: loss(hidden, tab, labels, where, key=key)))
        la, ga = fn(jnp.asarray(table))
        lb, _ = jax.jit(jax.value_and_grad(lambda tab: loss(hidden, tab, labels, where, key=key)))(
            jnp.asarray(table))
        assert_close(f"{spec.type} second trace", lb, la, 0.0, 0.0)
        if spec.type == "cce":
            one = build_loss(spec, n_items=v)
            want, gw = jax.value_and_grad(lambda tab: one(hidden, tab[1:v + 1], labels, where,
                                                          key=key))(jnp.asarray(table))
            assert_close("cce grad", ga, gw, 1e-5, 1e-7)
        else:
            sampler = (pallas_kernels.popularity_table(counts[1:]) if spec.sampler == "popularity"
                       else None)
            want = pallas_kernels.sampled_linear_cross_entropy(
                hidden, jnp.asarray(table), labels, num_negatives=9, seed=kernel_seed(key),
                sampler=sampler, where=where,
                vocab_parallel=pallas_kernels.VocabParallelOptions(mesh, col_start=1, num_classes=v))
        assert_close(f"{spec.type} value", la, want, 1e-5, 1e-6)
    try:
        build_loss(LossSpec(type="ce"), n_items=v, mesh=mesh)
    except ValueError as err:
        if "vocabulary-parallel" not in str(err):
            raise
    else:
        raise AssertionError("ce on a vocab-sharded mesh was accepted")
    try:
        build_loss(LossSpec(type="cce_neg", num_negatives=4, sharing="block"), n_items=v, mesh=mesh)
    except ValueError as err:
        if "sharing='row'" not in str(err):
            raise
    else:
        raise AssertionError("vocabulary-parallel cce_neg accepted sharing='block'")


def check_benchmark_script():
    """experiments/benchmark_multi_gpu.py at tiny sizes on 2x4 (vp) writes a finite JSON row."""
    from experiments import benchmark_multi_gpu as bench

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "vp.json")
        bench.main(["--mode", "vp", "--vocab", "4", "--items", "301", "--batch", "16",
                    "--length", "8", "--hidden", "16", "--blocks", "1", "--steps", "2",
                    "--impl", "xla", "--out", out])
        payload = json.load(open(out))
    row = payload["rows"][0]
    if row["mesh"] != {"data": 2, "vocab": 4} or row["table_rows"] % 8 or row["table_rows"] < 302:
        raise AssertionError(f"unexpected mesh/table in {row}")
    if not row["finite"] or row["timed_steps"] != 2:
        raise AssertionError(f"bad benchmark row {row}")
    if not 0 < row["loss_first"] < 2 * np.log(301):
        raise AssertionError(f"implausible first loss {row['loss_first']} for 301 items")


def check_sharded_top_k():
    """Per-shard top-K merged over vocab equals the single-device top_k_items (ties included)."""

    rng = np.random.default_rng(7)
    v, h, users, k = 45, 8, 13, 10
    # Small integers: exact float32 scores, so ties are real and must break the same way.
    q = rng.integers(-2, 3, (users, h)).astype(np.float32)
    items = rng.integers(-2, 3, (v, h)).astype(np.float32)
    lens = rng.integers(0, 6, users)
    seen = np.concatenate([rng.choice(np.arange(1, v + 1), size=n, replace=False) for n in lens])
    excl = Sequences(offsets=np.r_[0, np.cumsum(lens)].astype(np.int64),
                     items=seen.astype(np.int32), users=np.arange(users, dtype=np.int64))
    want = top_k_items(jnp.asarray(q), jnp.asarray(items), k, exclude=excl, user_chunk=8,
                       item_chunk=16)
    for data, vocab in MESHES:
        mesh = dist.make_mesh(MeshSpec(data=data, vocab=vocab))
        rows = 48  # row 0 padding, 1..45 items, 46..47 alignment padding (large: must not win)
        table = np.full((rows, h), 3.0, np.float32)
        table[1:v + 1] = items
        table = jax.device_put(table, dist.state_shardings({"item_table": table}, mesh)["item_table"])
        got = dist.top_k_items_sharded(jnp.asarray(q), table, k, mesh=mesh, n_items=v,
                                       exclude=excl, user_chunk=8, item_chunk=4)
        np.testing.assert_array_equal(got, want, err_msg=f"mesh {data}x{vocab}")
        # Evaluation takes the sharded path exactly when the table is split over vocab.
        found = dist.sharded_table({"item_table": {"embedding": table}})
        if (found is None) != (vocab == 1):
            raise AssertionError(f"sharded_table on {data}x{vocab}: {found}")


def check_trainer_end_to_end():
    """``loop.train`` with ``config.mesh`` = 2 data x 4 vocab (SASRec, cce, synthetic data, one
    epoch) gives one device's training loss and (up to rank flips of near-tied scores) metrics."""
    def config(workdir, mesh):
        c = synthetic_config("cce")
        c.data.synthetic.n_users = 240
        c.data.synthetic.n_items = 150
        c.data.synthetic.mean_length = 12.0
        c.data.cache_dir = os.path.join(workdir, "cache")
        c.data.split = "leave_one_out"
        c.model.update(hidden=16, max_len=12, dropout=0.1, compute_dtype="float32")
        c.loss.impl = "xla"
        c.train.update(batch_size=32, lr=1e-2, eps=1e-4, window_stride=None, max_epochs=1,
                       log_every=3, eval_batch_size=64, prefetch=0)
        c.eval.update(ks=(1, 10), user_chunk=48, item_chunk=64, popularity_baseline=False)
        if mesh is None:
            c.mesh.enabled = False  # one device although 8 are visible
        else:
            c.mesh.update(data=mesh[0], vocab=mesh[1])
        return c

    with tempfile.TemporaryDirectory() as tmp:
        one = loop.train(config(tmp, None), os.path.join(tmp, "one"))
        many = loop.train(config(tmp, (2, 4)), os.path.join(tmp, "many"))
        rows = [json.loads(line) for line in open(os.path.join(tmp, "many", "metrics.jsonl"))]
        rows_one = [json.loads(line) for line in open(os.path.join(tmp, "one", "metrics.jsonl"))]
    assert_close("train loss", [r["train_loss"] for r in rows], [r["train_loss"] for r in rows_one],
           1e-5, 1e-6)
    for split in ("val", "test"):
        for name in ("ndcg@10", "hitrate@10"):
            assert_close(f"{split} {name}", many[split][name], one[split][name], 0.0, 0.02)
    if not one["test"]["hitrate@10"] > 0:
        raise AssertionError(f"degenerate run: {one['test']}")


def check_default_mesh():
    """The base config puts every visible device on ``data`` (item table not split),
    ``mesh.enabled=False`` keeps one device, and a batch must split evenly over ``data``."""
    spec = load_specs(synthetic_config("cce"))
    mesh = dist.run_mesh(spec.mesh)
    if mesh is None or dict(mesh.shape) != {"data": 8, "vocab": 1}:
        raise AssertionError(f"default mesh: {None if mesh is None else dict(mesh.shape)}")
    if dist.run_mesh(MeshSpec(enabled=False)) is not None:
        raise AssertionError("mesh.enabled=False still built a mesh")
    try:
        dist.shard_batch({"inputs": np.zeros((12, 4), np.int32)}, mesh)
    except ValueError as err:
        if "multiple of 8" not in str(err):
            raise
    else:
        raise AssertionError("batch 12 on 8 data shards was accepted")


PREFIX = "CHECK "  # result lines; other output (e.g. the benchmark's JSON row) is ignored
CHECKS = {name[len("check_"):]: fn for name, fn in sorted(globals().items())
          if name.startswith("check_") and callable(fn)}


def main(names):
    if len(jax.devices()) != 8:
        raise SystemExit(f"expected 8 forced host devices, got {jax.devices()}")
    for name in names or list(CHECKS):
        t0 = time.perf_counter()
        try:
            CHECKS[name]()
            out = {"check": name, "ok": True, "error": ""}
        except Exception as e:  # reported to the pytest side, which fails that test
            out = {"check": name, "ok": False,
                   "error": f"{type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}"}
        out["seconds"] = round(time.perf_counter() - t0, 2)
        print(PREFIX + json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
