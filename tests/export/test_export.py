"""The serving artifact: same top-K as ``srs_jax.inference.recommend``, any batch size, chunked
catalog scan, loadable without srs_jax, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import export as export_cli
from srs_jax import export as export_lib
from srs_jax import models as models_lib
from srs_jax.inference import recommend
from srs_jax.training import evaluation
from srs_jax.training import steps as steps_lib
from srs_jax.training.saved_run import load_run

from export.runs import tiny_config


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOL = 1e-5  # fp32 scores of the same query and item rows, computed in different batch shapes


_BUILT: dict = {}


def _artifact(model, tmp_path_factory, tiny_run):
    """A 1-epoch run and its artifact with an item chunk (7) far below the catalog size."""
    if model not in _BUILT:
        run = tiny_run(model)
        out = str(tmp_path_factory.mktemp(model) / "artifact")
        _BUILT[model] = run, out, export_lib.export_run(run, out, k=10, item_chunk=7)
    return _BUILT[model]


@pytest.fixture(scope="module", params=["sasrec", "bert4rec"])
def artifact(request, tmp_path_factory, tiny_run):
    return _artifact(request.param, tmp_path_factory, tiny_run)


@pytest.fixture(scope="module")
def sasrec_artifact(tmp_path_factory, tiny_run):
    return _artifact("sasrec", tmp_path_factory, tiny_run)


def _random_histories(raw_ids, n, max_len, rng):
    """Raw-id histories of ragged lengths 1..max_len; some rows repeat a few items many times."""
    out = []
    for i in range(n):
        length = int(rng.integers(1, max_len + 1))
        pool = raw_ids if i % 3 else raw_ids[rng.choice(len(raw_ids), 3, replace=False)]
        out.append(list(pool[rng.integers(0, len(pool), length)]))
    return out


def _encode(raw_ids, histories, max_len, rng):
    """int32[B, L] encoded histories, left- or right-padded at random (both are accepted)."""
    index = {str(v): i for i, v in enumerate(raw_ids.tolist())}
    out = np.zeros((len(histories), max_len), np.int32)
    for r, h in enumerate(histories):
        ids = [index[str(x)] for x in h]
        if rng.random() < 0.5:
            out[r, max_len - len(ids):] = ids
        else:
            out[r, :len(ids)] = ids
    return out


def _float64_scores(run, encoded):
    """float64 ``[B, V]`` scores (column v - 1 = item v) of the histories, recomputed here."""
    left = np.asarray(export_lib.left_align(jnp.asarray(encoded)))
    query = steps_lib.make_encode_step(run.config.model)(run.graphdef, run.state, jnp.asarray(left))
    items = steps_lib.output_embeddings(run.graphdef, run.state)
    return np.asarray(query, np.float64) @ np.asarray(items, np.float64).T


def _check_against_recommend(run_dir, artifact_dir, batch, seed):
    run = load_run(run_dir)
    raw_ids = np.asarray(run.dataset.item_raw_ids)
    max_len = int(run.config.model.max_len)
    rng = np.random.default_rng(seed)
    histories = _random_histories(raw_ids[1:], batch, max_len, rng)
    encoded = _encode(raw_ids, histories, max_len, rng)

    serve = export_lib.load_artifact(artifact_dir)
    got_raw, got_scores = serve(encoded)
    expected_raw = recommend(run_dir, histories=histories, k=10, run=run)
    assert got_raw.shape == expected_raw.shape == (batch, 10) and got_scores.dtype == np.float32

    index = {str(v): i for i, v in enumerate(raw_ids.tolist())}
    got = np.vectorize(lambda x: index[str(x)])(got_raw)
    want = np.vectorize(lambda x: index[str(x)])(expected_raw)
    ref = _float64_scores(run, encoded)
    for r in range(batch):
        seen = set(encoded[r][encoded[r] > 0].tolist())
        assert not seen & set(got[r].tolist()) and len(set(got[r].tolist())) == 10
        s_got, s_want = ref[r, got[r] - 1], ref[r, want[r] - 1]
        np.testing.assert_allclose(got_scores[r], s_got, rtol=0, atol=TOL)
        # Same ranking as recommend up to exact-score ties, and it is the true top-10 of the
        # unseen items in float64.
        np.testing.assert_allclose(s_got, s_want, rtol=0, atol=TOL)
        unseen = np.delete(ref[r], np.array(sorted(seen)) - 1)
        np.testing.assert_allclose(s_got, np.sort(unseen)[::-1][:10], rtol=0, atol=TOL)
        gaps = np.diff(s_got)
        separated = np.ones(10, bool)
        separated[:-1] &= np.abs(gaps) > TOL
        separated[1:] &= np.abs(gaps) > TOL
        np.testing.assert_array_equal(got[r][separated], want[r][separated])
    return got


def test_matches_recommend_at_two_batch_sizes(artifact):
    run_dir, out, manifest = artifact
    assert manifest["item_chunk"] == 7 < manifest["n_items"]
    a = _check_against_recommend(run_dir, out, batch=5, seed=0)
    b = _check_against_recommend(run_dir, out, batch=23, seed=1)
    assert a.shape == (5, 10) and b.shape == (23, 10)


def test_chunk_size_does_not_change_the_answer(artifact, tmp_path):
    run_dir, out, _ = artifact
    whole = export_lib.export_run(run_dir, str(tmp_path / "whole"), k=10, item_chunk=10**6)
    assert whole["item_chunk"] == whole["n_items"]
    rng = np.random.default_rng(3)
    hist = rng.integers(0, whole["n_items"] + 1, size=(9, whole["max_len"])).astype(np.int32)
    ids_a, s_a = export_lib.load_artifact(out)(hist)
    ids_b, s_b = export_lib.load_artifact(str(tmp_path / "whole"))(hist)
    np.testing.assert_allclose(s_a, s_b, rtol=0, atol=TOL)
    np.testing.assert_array_equal(ids_a, ids_b)


def test_manifest_and_files(artifact):
    run_dir, out, manifest = artifact
    with open(os.path.join(out, "manifest.json")) as f:
        on_disk = json.load(f)
    assert on_disk == manifest
    run = load_run(run_dir)
    assert manifest["model"] == run.config.model.name and manifest["k"] == 10
    assert manifest["max_len"] == 8 and manifest["n_items"] == run.dataset.n_items
    assert manifest["platforms"][0] == "cpu" and manifest["batch"] == "symbolic"
    assert set(os.listdir(out)) == {"serve.jaxexport", "weights.npz", "item_ids.npy", "manifest.json"}
    ids = np.load(os.path.join(out, "item_ids.npy"), allow_pickle=False)
    np.testing.assert_array_equal(ids.astype(str), np.asarray(run.dataset.item_raw_ids).astype(str))
    with np.load(os.path.join(out, "weights.npz")) as z:
        assert len(z.files) == len(manifest["weights"])
        for i, w in enumerate(manifest["weights"]):
            assert list(z[f"w{i:04d}"].shape) == w["shape"]
    exported = jax.export.deserialize(bytearray(open(os.path.join(out, "serve.jaxexport"), "rb").read()))
    assert tuple(exported.platforms) == tuple(manifest["platforms"])


def test_cuda_is_exported_without_a_gpu(artifact):
    """jax lowers for cuda on a CPU-only install (the artifact then serves on both)."""
    assert artifact[2]["platforms"] == ["cpu", "cuda"]


def test_padding_and_short_catalog_remainder(artifact):
    """Left- and right-padded rows give the same answer; with K close to the catalog size the
    slots past the unseen items hold id 0 with score -inf."""
    _, out, manifest = artifact
    serve = export_lib.load_artifact(out)
    item_ids = np.load(os.path.join(out, "item_ids.npy"))
    hist = np.array([[0, 0, 0, 5, 9, 9, 2, 7], [5, 9, 9, 2, 7, 0, 0, 0]], np.int32)
    ids, scores = serve(hist)
    np.testing.assert_array_equal(ids[0], ids[1])
    np.testing.assert_array_equal(scores[0], scores[1])
    # K = V - 2 with 8 distinct items seen: V - 8 items, then 6 empty slots (id 0, -inf).
    run = load_run(artifact[0])
    fn, weights = export_lib.serving_function(run.graphdef, run.state, run.config.model,
                                              k=manifest["n_items"] - 2, item_chunk=7)
    hist = np.array([[1, 2, 3, 4, 5, 6, 7, 8]], np.int32)
    ids2, scores2 = jax.jit(fn)(*weights, hist)
    ids2, scores2 = np.asarray(ids2[0]), np.asarray(scores2[0])
    valid = ids2[:-6]
    assert np.all(valid > 8) and len(set(valid.tolist())) == manifest["n_items"] - 8
    assert np.all(np.isfinite(scores2[:-6])) and np.all(np.diff(scores2[:-6]) <= 0)
    assert np.all(ids2[-6:] == 0) and np.all(np.isneginf(scores2[-6:]))
    assert item_ids.shape == (manifest["n_items"] + 1,)


_LOADER = """
import importlib.abc, sys
class _NoProject(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("srs_jax", "configs", "experiments", "pallas_kernels"):
            raise ImportError(f"{name} is not available in this process")
sys.meta_path.insert(0, _NoProject())
try:
    import srs_jax
    raise SystemExit("srs_jax importable")
except ImportError:
    pass
d = sys.argv[1]
# --- the five lines of docs/serving.md ---
import jax, numpy as np
f = jax.export.deserialize(bytearray(open(f"{d}/serve.jaxexport", "rb").read()))
w = np.load(f"{d}/weights.npz"); weights = [w[n] for n in sorted(w.files)]
ids, scores = f.call(*weights, np.load(sys.argv[2]))
raw = np.load(f"{d}/item_ids.npy")[np.asarray(ids)]
# ---
np.save(sys.argv[3], np.asarray(ids)); np.save(sys.argv[4], np.asarray(scores))
assert "srs_jax" not in sys.modules
"""


def test_loads_and_runs_without_srs_jax(artifact, tmp_path):
    _, out, manifest = artifact
    rng = np.random.default_rng(7)
    hist = rng.integers(0, manifest["n_items"] + 1, size=(6, manifest["max_len"])).astype(np.int32)
    np.save(tmp_path / "h.npy", hist)
    script = tmp_path / "serve.py"
    script.write_text(textwrap.dedent(_LOADER))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-I", str(script), out, str(tmp_path / "h.npy"),
                           str(tmp_path / "ids.npy"), str(tmp_path / "scores.npy")],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ids, scores = export_lib.load_artifact(out)(hist)
    item_ids = np.load(os.path.join(out, "item_ids.npy"))
    np.testing.assert_array_equal(item_ids[np.load(tmp_path / "ids.npy")], ids)
    np.testing.assert_array_equal(np.load(tmp_path / "scores.npy"), scores)


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "experiments.export", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_writes_an_artifact(sasrec_artifact, tmp_path):
    run_dir, _, _ = sasrec_artifact
    proc = _cli("--workdir", run_dir, "--out", str(tmp_path / "a"), "--k", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "top-5" in proc.stdout
    assert json.load(open(tmp_path / "a" / "manifest.json"))["k"] == 5


def test_cli_bad_inputs_one_line(tmp_path, sasrec_artifact, capsys):
    no_run = tmp_path / "empty"
    no_run.mkdir()
    no_ckpt = tmp_path / "fresh"
    no_ckpt.mkdir()
    with open(os.path.join(sasrec_artifact[0], "config.json")) as f:
        (no_ckpt / "config.json").write_text(f.read())
    cases = [(str(no_run), "is not a run folder"), (str(no_ckpt), "has no checkpoint yet"),
             (str(tmp_path / "missing"), "is not a directory"),
             (sasrec_artifact[0], "must be between 1 and the catalog size")]
    for workdir, message in cases:
        code = export_cli.main(["--workdir", workdir, "--out", str(tmp_path / "x"), "--k", "100000"])
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
        assert message in lines[0]
    assert not (tmp_path / "x").exists()
    # As a command: the same single line, no traceback.
    proc = _cli("--workdir", str(no_run), "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: {no_run} is not a run folder (no config.json): pass --workdir of a run made by "
        "python -m experiments.train"]


@pytest.mark.parametrize("model,dtype", [("sasrec", "bfloat16"), ("bert4rec", "bfloat16")])
def test_serving_function_matches_the_evaluator_untrained(model, dtype, tmp_path):
    """No run needed: a fresh model (bf16 compute too) through the exported function at two batch
    sizes vs the evaluator that ``recommend`` calls, with a 5-row item chunk."""
    config = tiny_config(tmp_path, model)
    config.model.compute_dtype = dtype
    n_items, max_len, k = 37, int(config.model.max_len), 6
    model_ = models_lib.build_model(config.model, n_items, rngs=nnx.Rngs(params=3, dropout=4))
    graphdef, state = steps_lib.split_model(model_)
    fn, weights = export_lib.serving_function(graphdef, state, config.model, k=k, item_chunk=5)
    exported, platforms = export_lib.export_function(fn, weights, max_len, platforms=("cpu",))
    assert platforms == ("cpu",)
    rng = np.random.default_rng(11)
    for batch in (1, 12):
        lengths = rng.integers(1, max_len + 1, batch)
        hists = [rng.integers(1, n_items + 1, n).astype(np.int32) for n in lengths]
        dense = np.zeros((batch, max_len), np.int32)
        for r, h in enumerate(hists):
            dense[r, max_len - len(h):] = h
        ids, scores = exported.call(*weights, dense)
        want = evaluation.top_k_for_histories(graphdef, state, hists, k, config=config,
                                              encode_fn=steps_lib.make_encode_step(config.model))
        query = steps_lib.make_encode_step(config.model)(graphdef, state, jnp.asarray(dense))
        items = np.asarray(steps_lib.output_embeddings(graphdef, state), np.float64)
        ref = np.asarray(query, np.float64) @ items.T
        ids = np.asarray(ids)
        for r in range(batch):
            np.testing.assert_allclose(np.asarray(scores)[r], ref[r, ids[r] - 1], rtol=0, atol=1e-4)
            np.testing.assert_allclose(ref[r, ids[r] - 1], ref[r, want[r] - 1], rtol=0, atol=1e-5)
            assert not set(ids[r].tolist()) & set(hists[r].tolist())
