"""Full-catalog evaluation of a trained model and of the popularity baseline.

Every item of a user's input history is removed from the ranking (as in MemoryEfficientSRS); the top-K
search is chunked by ``srs_jax.metrics.top_k_items`` so no score matrix larger than
``eval.user_chunk x eval.item_chunk`` exists. On a mesh the users are split over ``data`` (and so
over the processes of a multi-process run) and every process gets all the results.
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp

from srs_jax import data as data_lib
from srs_jax import metrics as metrics_lib
from srs_jax import parallel
from srs_jax.data import batches as batches_lib
from srs_jax.training import steps as steps_lib


def encode_histories(encode_fn, graphdef, state, histories: np.ndarray, batch_size: int) -> jax.Array:
    """``histories int32[U, L]`` -> fp32 query vectors ``[U, H]``, in fixed-size batches (one compile)."""
    n = histories.shape[0]
    batch_size = max(1, min(int(batch_size), n))
    outs = []
    for start in range(0, n, batch_size):
        chunk = histories[start:start + batch_size]
        pad = batch_size - chunk.shape[0]
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, chunk.shape[1]), chunk.dtype)])
        outs.append(encode_fn(graphdef, state, jnp.asarray(chunk))[:batch_size - pad])
    return jnp.concatenate(outs, axis=0)


def top_k(graphdef, state, histories, k: int, *, config, encode_fn) -> np.ndarray:
    """Top-``k`` encoded item ids ``int32[U, k]`` after each history (a ``Sequences``), its items
    removed. ``config``: the run's ``RunSpec`` (model.max_len, train.eval_batch_size, eval chunks)."""
    windows = batches_lib.last_items(histories, int(config.model.max_len))
    query = encode_histories(encode_fn, graphdef, state, windows, config.train.eval_batch_size)
    on_mesh = parallel.table_mesh(state.params)
    if on_mesh is not None:  # users split over data; a vocab-sharded table is never gathered
        table, mesh = on_mesh
        n_items = int(steps_lib.merge_model(graphdef, state).n_items)
        col_start = 1
        if mesh.shape[parallel.VOCAB] == 1:  # the whole table on every device: the model's rows
            table, col_start = steps_lib.output_embeddings(graphdef, state), 0
        return parallel.top_k_items_sharded(query, table, int(k), mesh=mesh, n_items=n_items,
                                            exclude=histories, col_start=col_start,
                                            user_chunk=int(config.eval.user_chunk),
                                            item_chunk=int(config.eval.item_chunk))
    items = steps_lib.output_embeddings(graphdef, state)
    return np.asarray(metrics_lib.top_k_items(
        query, items, int(k), exclude=histories, user_chunk=int(config.eval.user_chunk),
        item_chunk=int(config.eval.item_chunk)))


def top_k_for_histories(graphdef, state, histories: list[np.ndarray], k: int, *, config,
                        encode_fn) -> np.ndarray:
    """``top_k`` for a list of encoded histories (``int32`` arrays of ids 1..V, oldest first)."""
    lengths = np.array([len(h) for h in histories], np.int64)
    seqs = data_lib.Sequences(offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                              items=np.concatenate(histories).astype(np.int32),
                              users=np.arange(len(histories), dtype=np.int64))
    return top_k(graphdef, state, seqs, k, config=config, encode_fn=encode_fn)


def _scores_metrics(top_items, split, eval_config, n_items: int, test_period) -> dict:
    ks = tuple(int(k) for k in eval_config.ks)
    out = metrics_lib.ranking_metrics(np.asarray(top_items), np.asarray(split.targets), ks)
    out = {k: float(v) for k, v in out.items()}
    if test_period is not None:
        out.update(beyond_accuracy(top_items, test_period, n_items, eval_config))
    return out


def beyond_accuracy(top_items, test_period, n_items: int, eval_config) -> dict:
    """Coverage@K and Surprisal@K (reference or conventional definitions, see ``srs_jax.metrics``)."""
    out = {}
    top_items = np.asarray(top_items)
    mode = str(eval_config.coverage_mode)
    for k in eval_config.ks:
        k = int(k)
        out[f"coverage@{k}"] = float(metrics_lib.coverage(
            top_items[:, :k], test_period=test_period, n_items=n_items, mode=mode))
        out[f"surprisal@{k}"] = float(metrics_lib.surprisal(
            top_items[:, :k], test_period=test_period, n_items=n_items, mode=mode))
    return out


def evaluate_model(graphdef, state, split, *, config, n_items: int, encode_fn,
                   test_period=None) -> tuple[dict, np.ndarray]:
    """Metrics of the model on ``split`` (an ``EvalSplit``) and its top-K items ``int32[U, K]``."""
    if len(split.targets) == 0:
        raise ValueError("the evaluation split has no users: check config.data (split, filters)")
    top = top_k(graphdef, state, split.inputs, max(int(k) for k in config.eval.ks),
                config=config, encode_fn=encode_fn)
    return _scores_metrics(top, split, config.eval, n_items, test_period), top


def evaluate_popularity(item_counts: np.ndarray, split, *, config, n_items: int,
                        test_period=None) -> dict:
    """The most-popular-in-training baseline, with the same seen-item removal and metrics."""
    top = metrics_lib.popularity_top_k(
        item_counts, max(int(k) for k in config.eval.ks), n_users=len(split.targets),
        exclude=split.inputs, user_chunk=int(config.eval.user_chunk),
        item_chunk=int(config.eval.item_chunk))
    return _scores_metrics(np.asarray(top), split, config.eval, n_items, test_period)
