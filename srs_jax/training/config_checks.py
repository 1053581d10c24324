"""Resolution of 'auto' settings and one-line errors for run configs that cannot work."""

from __future__ import annotations

import jax
import ml_collections

from pallas_kernels.cce_neg.config import DC_ACCUMS
from pallas_kernels.cce_neg.sampling import ROW_SAMPLINGS
from srs_jax import models as models_lib

LOSS_TYPES = ("ce", "ce_neg", "bce", "bce_plus", "gbce", "sce", "cce", "cce_neg")
SAMPLED_LOSSES = ("ce_neg", "cce_neg", "bce_plus", "gbce")
SAMPLERS = ("uniform", "popularity")
SCHEDULES = ("constant", "cosine")
COVERAGE_MODES = ("reference", "conventional")
COMPUTE_DTYPES = ("auto", "float32", "bfloat16")


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy with ``model.compute_dtype='auto'`` replaced by bfloat16 (GPU/TPU) or float32 (CPU)."""
    config = ml_collections.ConfigDict(config.to_dict())
    if config.model.compute_dtype == "auto":
        config.model.compute_dtype = "float32" if jax.default_backend() == "cpu" else "bfloat16"
    return config


def _fail(field: str, value, fix: str):
    raise ValueError(f"config.{field}={value!r} is invalid: {fix}")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises a one-line ``ValueError`` naming the field and the fix."""
    if config.model.name not in models_lib.MODEL_MODULES:
        _fail("model.name", config.model.name, f"use one of {sorted(models_lib.MODEL_MODULES)}")
    for field in ("hidden", "num_blocks", "num_heads", "max_len"):
        if int(config.model[field]) < 1:
            _fail(f"model.{field}", config.model[field], "must be a positive integer")
    if config.model.compute_dtype not in COMPUTE_DTYPES:
        _fail("model.compute_dtype", config.model.compute_dtype, f"use one of {list(COMPUTE_DTYPES)}")
    loss = config.loss
    if loss.type not in LOSS_TYPES:
        _fail("loss.type", loss.type, f"use one of {list(LOSS_TYPES)}")
    if loss.type in SAMPLED_LOSSES and int(loss.num_negatives) < 1:
        _fail("loss.num_negatives", loss.num_negatives, f"loss {loss.type} needs >= 1 negatives")
    if loss.sampler not in SAMPLERS:
        _fail("loss.sampler", loss.sampler, f"use one of {list(SAMPLERS)}")
    for field, allowed in (("dc_accum", DC_ACCUMS), ("row_sampling", ROW_SAMPLINGS)):
        if loss.get(field, allowed[0]) not in allowed:
            _fail(f"loss.{field}", loss[field], f"use one of {list(allowed)}")
    train = config.train
    for field in ("batch_size", "eval_batch_size", "max_epochs", "patience", "log_every"):
        if int(train[field]) < 1:
            _fail(f"train.{field}", train[field], "must be a positive integer")
    if int(train.prefetch) < 0:
        _fail("train.prefetch", train.prefetch, "must be >= 0 (0 = no background prefetch)")
    if not float(train.lr) > 0:
        _fail("train.lr", train.lr, "must be > 0")
    for field in ("b1", "b2"):
        if not 0.0 <= float(train[field]) < 1.0:
            _fail(f"train.{field}", train[field], "must be in [0, 1)")
    if train.schedule not in SCHEDULES:
        _fail("train.schedule", train.schedule, f"use one of {list(SCHEDULES)}")
    if int(train.warmup_steps) < 0 or float(train.grad_clip) < 0:
        _fail("train.warmup_steps/grad_clip", (train.warmup_steps, train.grad_clip), "must be >= 0")
    ev = config.eval
    ks = [int(k) for k in ev.ks]
    if not ks or min(ks) < 1:
        _fail("eval.ks", ev.ks, "give a non-empty list of positive cutoffs, e.g. [1, 5, 10]")
    name, _, k = str(ev.monitor).partition("@")
    if not k.isdigit() or int(k) not in ks or not name:
        _fail("eval.monitor", ev.monitor, f"use '<metric>@<k>' with k in eval.ks={ks}")
    if ev.coverage_mode not in COVERAGE_MODES:
        _fail("eval.coverage_mode", ev.coverage_mode, f"use one of {list(COVERAGE_MODES)}")
    if int(ev.user_chunk) < 1 or int(ev.item_chunk) < 1:
        _fail("eval.user_chunk/item_chunk", (ev.user_chunk, ev.item_chunk), "must be positive")
