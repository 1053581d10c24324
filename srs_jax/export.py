"""Serving artifacts: a trained run as one ``jax.export`` function plus its weights.

``export_run(workdir, out)`` writes four files to ``out``:

* ``serve.jaxexport``: the serialized function ``(w0, w1, ..., histories int32[B, L]) ->
  (ids int32[B, K], scores float32[B, K])``. ``B`` is symbolic (one artifact serves any batch
  size), ``L`` is the model's ``max_len``. ``histories`` holds encoded item ids, ``0`` = padding
  (left, right or anywhere: the non-zero ids are moved to the right end in their order first).
  Items present in a history are never returned; ``ids`` are encoded ids ``1..V`` best first,
  ``0`` in the slots left when fewer than ``K`` unseen items remain (their score is ``-inf``).
  The catalog is scanned in ``item_chunk`` blocks with a running top-K
  (``srs_jax.metrics.topk.chunked_top_k``), so no ``[B, V]`` score matrix is ever built.
* ``weights.npz``: the function's weight arguments ``w000, w001, ...`` in call order (the model's
  parameters, names in the manifest); kept beside the function so the function stays small and
  generic.
* ``item_ids.npy``: raw item id of each encoded id (entry 0 = padding), saved without pickle.
* ``manifest.json``: model, K, L, catalog size, dtypes, platforms, chunk size, file names.

Loading and calling needs only jax and numpy (``docs/serving.md``); ``load_artifact`` does the
same for Python callers. The function computes exactly what ``srs_jax.inference.recommend`` does
for histories of at most ``L`` items (same encoder, same fp32 scoring, same tie order).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from srs_jax.metrics import topk as topk_lib
from srs_jax.training import steps as steps_lib
from srs_jax.training.saved_run import load_run
from srs_jax.training.warm_start import param_names

FORMAT = "srs-jax-serving/1"
FUNCTION_FILE = "serve.jaxexport"
WEIGHTS_FILE = "weights.npz"
ITEM_IDS_FILE = "item_ids.npy"
MANIFEST_FILE = "manifest.json"
DEFAULT_PLATFORMS = ("cpu", "cuda")


class ExportError(ValueError):
    """A run that cannot be exported, or an artifact that cannot be read (one-line message)."""


def check_run_folder(workdir: str, which: str = "best") -> None:
    """Raises ``ExportError`` unless ``workdir`` is a run folder with a ``which`` checkpoint."""
    if not os.path.isdir(workdir):
        raise ExportError(f"{workdir} is not a directory: pass --workdir of a training run")
    if not os.path.isfile(os.path.join(workdir, "config.json")):
        raise ExportError(f"{workdir} is not a run folder (no config.json): pass --workdir of a run "
                          "made by python -m experiments.train")
    if which not in ("best", "latest"):
        raise ExportError(f"checkpoint {which!r}: use 'best' or 'latest'")
    slot = os.path.join(workdir, "checkpoints", which)
    if not (os.path.isdir(slot) and any(n.isdigit() for n in os.listdir(slot))):
        raise ExportError(f"{workdir} has no checkpoint yet (checkpoints/{which} is empty): train it "
                          "for at least one epoch first")


def left_align(histories: jax.Array) -> jax.Array:
    """Moves the non-zero ids of each row to the right end, in their order (0 = padding)."""
    order = jnp.argsort((histories != 0).astype(jnp.int32), axis=1, stable=True)
    return jnp.take_along_axis(histories, order, axis=1)


def serving_function(graphdef, state, model_spec, *, k: int, item_chunk: int):
    """``(fn, weights)``: ``fn(*weights, histories)`` -> ``(ids int32[B, k], scores f32[B, k])``.

    ``weights`` are the leaves of ``state.params`` (numpy); the rest of the state (RNG streams,
    unused when deterministic) is closed over.
    """
    leaves, treedef = jax.tree.flatten(state.params)
    rest = state.rest
    k, item_chunk = int(k), int(item_chunk)

    def fn(*args):
        *weights, histories = args
        st = steps_lib.TrainState(jax.tree.unflatten(treedef, list(weights)), rest)
        hist = left_align(histories.astype(jnp.int32))
        query = steps_lib.encode_step(graphdef, st, hist, model_spec=model_spec)
        items = steps_lib.merge_model(graphdef, st).output_embeddings().astype(jnp.float32)
        scores, idx = topk_lib.chunked_top_k(query, items, k, item_chunk=item_chunk,
                                             exclude=hist - 1)
        ids = jnp.where(jnp.isneginf(scores), 0, idx + 1).astype(jnp.int32)
        return ids, scores

    return fn, [np.asarray(x) for x in leaves]


def export_function(fn, weights, max_len: int, platforms=DEFAULT_PLATFORMS):
    """``(jax.export.Exported, platforms)`` of ``fn`` with a symbolic batch dimension.

    Platforms the jax install cannot lower for are dropped (``cpu`` is always kept)."""
    (batch,) = jax.export.symbolic_shape("batch")
    specs = [jax.ShapeDtypeStruct(w.shape, w.dtype) for w in weights]
    specs.append(jax.ShapeDtypeStruct((batch, int(max_len)), jnp.int32))
    platforms = tuple(platforms)
    try:
        return jax.export.export(jax.jit(fn), platforms=platforms)(*specs), platforms
    except Exception:  # e.g. a jax build that cannot lower for cuda: fall back to cpu only
        if platforms == ("cpu",):
            raise
        return jax.export.export(jax.jit(fn), platforms=("cpu",))(*specs), ("cpu",)


def export_run(workdir: str, out: str, *, k: int = 10, item_chunk: int | None = None,
               platforms=DEFAULT_PLATFORMS, which: str = "best") -> dict:
    """Writes the serving artifact of run ``workdir`` to ``out``; returns the manifest."""
    workdir = os.path.abspath(workdir)
    check_run_folder(workdir, which)
    run = load_run(workdir, which=which)
    n_items = int(run.dataset.n_items)
    if not 1 <= int(k) <= n_items:
        raise ExportError(f"--k={k} must be between 1 and the catalog size {n_items}")
    chunk = int(item_chunk or run.config.eval.item_chunk)
    if chunk < 1:
        raise ExportError(f"--item_chunk={chunk} must be positive")
    max_len = int(run.config.model.max_len)
    fn, weights = serving_function(run.graphdef, run.state, run.config.model, k=int(k),
                                   item_chunk=chunk)
    exported, done = export_function(fn, weights, max_len, platforms)
    raw = np.asarray(run.dataset.item_raw_ids)
    if raw.dtype == object:
        raw = raw.astype(str)
    names = param_names(run.state.params)
    manifest = {
        "format": FORMAT,
        "model": str(run.config.model.name),
        "k": int(k),
        "max_len": max_len,
        "n_items": n_items,
        "hidden": int(run.config.model.hidden),
        "item_chunk": min(chunk, n_items),
        "weights_dtype": sorted({str(w.dtype) for w in weights}),
        "compute_dtype": str(run.config.model.compute_dtype),
        "score_dtype": "float32",
        "platforms": list(done),
        "platforms_requested": list(platforms),
        "batch": "symbolic",
        "inputs": f"weights w0000..w{len(weights) - 1:04d} from {WEIGHTS_FILE}, then histories "
                  f"int32[B, {max_len}] of encoded item ids (0 = padding)",
        "outputs": f"ids int32[B, {int(k)}] (encoded, 0 = no item), scores float32[B, {int(k)}]",
        "weights": [{"name": n, "shape": list(w.shape), "dtype": str(w.dtype)}
                    for n, w in zip(names, weights)],
        "files": {"function": FUNCTION_FILE, "weights": WEIGHTS_FILE, "item_ids": ITEM_IDS_FILE},
        "run": {"workdir": workdir, "checkpoint": which, "epoch": int(run.checkpoint_epoch)},
        "jax_version": jax.__version__,
    }
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, FUNCTION_FILE), "wb") as f:
        f.write(exported.serialize())
    np.savez(os.path.join(out, WEIGHTS_FILE), **{f"w{i:04d}": w for i, w in enumerate(weights)})
    np.save(os.path.join(out, ITEM_IDS_FILE), raw, allow_pickle=False)
    with open(os.path.join(out, MANIFEST_FILE), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    return manifest


def load_artifact(path: str):
    """``recommend(histories int32[B, L]) -> (raw ids [B, K], scores f32[B, K])`` from an artifact.

    Raw ids of empty slots are ``item_ids[0]`` (the padding entry); their score is ``-inf``."""
    if not os.path.isfile(os.path.join(path, MANIFEST_FILE)):
        raise ExportError(f"{path} is not a serving artifact (no {MANIFEST_FILE}): write one with "
                          "python -m experiments.export")
    with open(os.path.join(path, FUNCTION_FILE), "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    with np.load(os.path.join(path, WEIGHTS_FILE)) as z:
        weights = [z[f"w{i:04d}"] for i in range(len(z.files))]
    item_ids = np.load(os.path.join(path, ITEM_IDS_FILE), allow_pickle=False)

    def recommend(histories):
        ids, scores = exported.call(*weights, np.asarray(histories, np.int32))
        return item_ids[np.asarray(ids)], np.asarray(scores)

    return recommend
