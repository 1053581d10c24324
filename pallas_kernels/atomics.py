"""``atomic_add``: relaxed float atomic adds for the Pallas Triton kernels.

``plt.atomic_add`` lowers every atomic to ``tt.atomic_rmw fadd, acq_rel, gpu``: each add is also
a release (the thread's earlier memory operations must be visible first) and an acquire. On an
H100 that is MEMBAR, ERRBAR, ATOMG and an L1 invalidate (CCTL) per atomic instruction, and the
barrier and the invalidate held 68% of the stall samples of the CCE- row backward; a relaxed add
is one fire-and-forget REDG. The kernels here need only atomicity, since each sum is read after
its kernel has ended. Measured (docs/decisions/005): CCE- row f+b 46.1 -> 41.4 ms (D = 128,
f32 dC), 99.4 -> 83.6 (D = 256).

jax has no public switch for the ordering, so this module registers a small primitive of its own
whose Triton lowering is jax's atomic lowering with ``MemSemantic.RELAXED``. It shares the
abstract evaluation and the interpreter (discharge) rule of jax's ``atomic_rmw`` primitive, so
``interpret=True`` runs it as any other atomic. Where those private hooks are missing (another
jax), ``RELAXED_AVAILABLE`` is False and every add falls back to ``plt.atomic_add``: same
values, acq_rel ordering. ``tests/kernels/test_atomics.py`` checks the emitted Triton IR on CPU.
(The acq_rel ordering is not offered as an option: it was slower everywhere it was measured;
docs/decisions.)
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax.experimental.pallas import triton as plt

def _register():
    """The relaxed add primitive, or None where this jax lacks the hooks it needs."""
    from jax import tree_util
    from jax._src import core as jax_core
    from jax._src import state
    from jax._src.lib.triton import dialect as tt
    from jax._src.pallas.triton import lowering as tl
    from jax._src.pallas.triton import primitives as tp
    from jax._src.state import discharge as state_discharge
    from jax._src.state import indexing
    from jax._src.state import primitives as state_primitives

    needed = (tp.atomic_rmw_p, tp.AtomicOpType.ADD, tp._atomic_abstract_eval,
              tp._atomic_rmw_discharge_rule, tl._atomic_rmw, tl._compute_pointers_from_indices,
              tl._ensure_ir_value, tl.register_lowering, tt.MemSemantic.RELAXED, tt.RMWOp.FADD,
              state_primitives.get_ref_and_transforms, state_discharge.register_discharge_rule)
    del needed  # an AttributeError above means: fall back

    prim = jax_core.Primitive("srs_relaxed_atomic_add")
    prim.def_effectful_abstract_eval(tp._atomic_abstract_eval)
    state_discharge.register_discharge_rule(prim)(tp._atomic_rmw_discharge_rule)

    def lower(ctx, *args_flat, args_tree, atomic_type):
        # jax's atomic lowering (pallas/triton/primitives.py), for ADD, with relaxed ordering.
        del atomic_type
        (block_info, *_) = ctx.block_infos
        ptr, indexers, val, mask = args_tree.unflatten(args_flat)
        *_, value_aval, mask_aval = args_tree.unflatten(ctx.avals_in)
        indexers = list(indexers)
        if not indexers or not isinstance(indexers[-1], indexing.NDIndexer):
            ref_aval = state.transform_type(indexers, ctx.avals_in[0])
            indexers.append(indexing.NDIndexer.make_trivial_indexer(ref_aval.shape))
        if len(indexers) != 1:
            raise NotImplementedError("relaxed atomic_add: one indexer only")
        ptr = tl._compute_pointers_from_indices(ptr, block_info, indexers[0])
        val = tl._ensure_ir_value(val, value_aval)
        if mask is not None:
            mask = tl._ensure_ir_value(mask, mask_aval)
        if not jnp.issubdtype(value_aval.dtype, jnp.floating):  # (bf16: numpy kind "V")
            raise NotImplementedError("relaxed atomic_add: floating-point values only")
        return tl._atomic_rmw(tt.RMWOp.FADD, ptr, val, mask=mask,
                              semantic=tt.MemSemantic.RELAXED)

    tl.register_lowering(prim)(lower)

    def bind(ref, idx, val, mask):
        ref, transforms = state_primitives.get_ref_and_transforms(ref, idx, "atomic_add")
        args_flat, args_tree = tree_util.tree_flatten((ref, transforms, val, mask))
        return prim.bind(*args_flat, args_tree=args_tree, atomic_type=tp.AtomicOpType.ADD)

    return bind


try:
    _relaxed_add = _register()
except (ImportError, AttributeError):  # a jax without these internals: acq_rel adds
    _relaxed_add = None

RELAXED_AVAILABLE = _relaxed_add is not None


def atomic_add(ref, idx, val, *, mask: Any | None = None):
    """``ref[idx] += val`` atomically with relaxed ordering (``plt.atomic_add``'s arguments;
    acq_rel where this jax lacks the hooks)."""
    if _relaxed_add is not None:
        return _relaxed_add(ref, idx, val, mask)
    return plt.atomic_add(ref, idx, val, mask=mask)
