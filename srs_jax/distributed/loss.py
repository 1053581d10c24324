"""The trainer's hook into the vocabulary-parallel losses.

``make_sharded_train_step`` traces ``srs_jax.training.steps.train_step`` inside ``use_plan(plan)``;
the step's loss function calls ``loss_hook(...)`` first, which returns the ``cce`` / ``cce_neg``
loss computed by ``pallas_kernels.vocab_parallel`` on the model's whole item table (class ``c`` =
table row ``c + 1``; row 0, a BERT4Rec mask row and padding rows are excluded), or ``None`` when
no plan is active (single device) so the step falls back to ``compute_loss``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from pallas_kernels import vocab_parallel
from srs_jax.distributed.mesh import VOCAB
from srs_jax.losses.common import DEFAULTS, num_negatives, option

_VP_LOSSES = ("cce", "cce_neg")
_state = threading.local()


@dataclasses.dataclass
class LossPlan:
    """What the hook needs besides the step's arrays (built on the host, once per run)."""

    mesh: Mesh
    table_rows: int  # rows of the (padded) item table: 0 = padding, 1..V = items, then others
    n_items: int  # V
    interpret: bool = False  # Pallas interpreter (CPU tests)
    sampler_tables: dict | None = None  # cce_neg: shard_sampler_tables(...) (host numpy)
    calls: int = 0  # traces that went through the hook (checked by make_sharded_train_step)
    lookup: str = "xla"  # input lookup: "xla" | "shard_map" (srs_jax.distributed.lookup)
    lookup_calls: int = 0  # traces that took the shard_map lookup

    @property
    def vocab(self) -> int:
        return self.mesh.shape[VOCAB]


def make_loss_plan(mesh: Mesh, loss_config, table_rows: int, n_items: int, *, item_counts=None,
                   interpret: bool = False, lookup: str = "xla") -> LossPlan:
    """A ``LossPlan`` for ``loss_config`` with an item table of ``table_rows`` rows (ids 1..V at
    rows 1..V). ``item_counts``: ``int[V + 1]`` by encoded id or ``int[V]`` by label (popularity
    sampling only). ``lookup``: "xla" | "shard_map", the models' input lookup (``lookup_hook``)."""
    if lookup not in ("xla", "shard_map"):
        raise ValueError(f"lookup={lookup!r} must be 'xla' or 'shard_map' (resolve 'auto' with "
                         "srs_jax.distributed.lookup.resolve_lookup)")
    name = option(loss_config, "type")
    tables = None
    if name == "cce_neg":
        if option(loss_config, "sharing") != "row":
            raise ValueError("vocabulary-parallel cce_neg draws negatives per row: set "
                             "loss.sharing='row'")
        for field in ("row_sampling", "dc_accum"):  # the shard kernels support only the defaults
            if option(loss_config, field) != DEFAULTS[field]:
                raise ValueError(f"vocabulary-parallel cce_neg supports only loss.{field}="
                                 f"'{DEFAULTS[field]}' (the shard kernels hash per row and "
                                 f"accumulate in float32): set it back")
        counts = None
        if option(loss_config, "sampler") == "popularity":
            if item_counts is None:
                raise ValueError("loss.sampler='popularity' needs the training item counts")
            counts = np.asarray(item_counts)
            if counts.shape == (n_items + 1,):  # by encoded id (slot 0 = padding) -> by label
                counts = counts[1:]
            if counts.shape != (n_items,):
                raise ValueError(f"item_counts has shape {counts.shape}; expected [V + 1] by "
                                 f"encoded id or [V] by label, V = {n_items}")
        tables = vocab_parallel.shard_sampler_tables(
            table_rows, mesh.shape[VOCAB], num_negatives(loss_config), col_start=1,
            num_classes=n_items, item_counts=counts)
    return LossPlan(mesh, int(table_rows), int(n_items), interpret=interpret, sampler_tables=tables,
                    lookup=lookup)


@contextlib.contextmanager
def use_plan(plan: LossPlan):
    """Makes ``plan`` the one ``loss_hook`` sees while tracing (thread-local, nestable)."""
    prev = getattr(_state, "plan", None)
    _state.plan = plan
    try:
        yield plan
    finally:
        _state.plan = prev


def current_plan() -> LossPlan | None:
    return getattr(_state, "plan", None)


def loss_hook(loss_config, model, hidden: jax.Array, labels: jax.Array, where: jax.Array, *,
              key: jax.Array, item_counts=None):
    """float32 loss of ``hidden [N, H]`` against ``model.item_table`` on the active mesh, or None.

    The patch point in ``srs_jax.training.steps.train_step`` (before ``output_embeddings()``).
    ``labels int32[N]`` in ``[0, V)``, ``where bool[N]``; same value as
    ``srs_jax.losses.compute_loss`` on ``model.output_embeddings()`` (cce exactly; cce_neg with the
    stratified estimator of ``pallas_kernels.vocab_parallel``). Uses the table as it is sharded:
    no slice, no copy beyond the per-shard cast to the compute dtype.
    """
    del item_counts  # popularity tables are built on the host into the plan
    plan = current_plan()
    if plan is None:
        return None
    name = option(loss_config, "type")
    if name not in _VP_LOSSES:
        if plan.vocab > 1:
            raise ValueError(f"loss.type={name!r} has no vocabulary-parallel version: with "
                             "mesh.vocab > 1 use 'cce' or 'cce_neg' (or set mesh.vocab=1)")
        return None  # data parallel: XLA partitions the plain-JAX losses itself
    table = model.item_table.embedding[...]
    if table.shape[0] != plan.table_rows or int(model.n_items) != plan.n_items:
        raise ValueError(f"the model's item table has {table.shape[0]} rows and {model.n_items} "
                         f"items; the loss plan expects {plan.table_rows} and {plan.n_items}")
    return _vp_loss(plan, loss_config, hidden, table, labels, where, key)


def classifier_hook(loss_config, hidden: jax.Array, classifier: jax.Array, labels: jax.Array,
                    where: jax.Array, *, key: jax.Array):
    """Like ``loss_hook`` but from the classifier ``[V', H]`` = ``model.output_embeddings()``.

    The patch point in ``srs_jax.losses.cut`` (``cce`` / ``cce_neg``), for when the trainer is not
    patched: the classifier (table rows 1..V') is padded back to the table's rows (one row in
    front, the rest behind) so it splits evenly over ``vocab``. XLA shifts each shard by a row
    (a neighbour exchange) and makes a copy of the local shard; ``loss_hook`` avoids both.
    """
    plan = current_plan()
    if plan is None:
        return None
    rows = classifier.shape[0]
    if not plan.n_items <= rows < plan.table_rows:
        raise ValueError(f"classifier has {rows} rows; expected between V={plan.n_items} and "
                         f"{plan.table_rows - 1} (model.output_embeddings() of the planned table)")
    table = jnp.pad(classifier, ((1, plan.table_rows - 1 - rows), (0, 0)))
    return _vp_loss(plan, loss_config, hidden, table, labels, where, key)


def _vp_loss(plan: LossPlan, loss_config, hidden, table, labels, where, key):
    name = option(loss_config, "type")
    plan.calls += 1
    impl = option(loss_config, "impl")
    impl = "xla" if impl == "naive" else impl
    if plan.interpret and impl == "auto":
        impl = "pallas"
    common = dict(mesh=plan.mesh, where=where, col_start=1, num_classes=plan.n_items, impl=impl,
                  interpret=plan.interpret)
    if name == "cce":
        return vocab_parallel.vocab_parallel_cross_entropy(hidden, table, labels, **common)
    if name != "cce_neg":
        raise ValueError(f"no vocabulary-parallel loss {name!r}")
    from srs_jax.losses.cut import kernel_seed  # (cut.py may import this module: late import)

    return vocab_parallel.vocab_parallel_sampled_cross_entropy(
        hidden, table, labels, num_negatives=num_negatives(loss_config), seed=kernel_seed(key),
        sampler_tables=plan.sampler_tables, **common)
