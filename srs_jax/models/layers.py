"""Transformer pieces shared by the sequential models (SASRec, BERT4Rec).

Parameters are always float32; ``dtype`` is the compute dtype of activations and matmuls.
Initialisers follow the reference (PyTorch ``xavier_normal_`` on every matrix, see
reference_system.md §3.4): a plain (not truncated) normal with std ``sqrt(2 / (fan_in + fan_out))``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from srs_jax.config.load import resolve_compute_dtype

# PyTorch xavier_normal_: untruncated normal, variance 2 / (fan_in + fan_out). For an embedding
# table [rows, H] this gives std sqrt(2 / (rows + H)), as torch does for its [rows, H] weight.
xavier_normal = jax.nn.initializers.variance_scaling(1.0, "fan_avg", "normal")

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
    """Maps ``ModelSpec.compute_dtype`` ('float32' | 'bfloat16'; 'auto' as ``load_specs``
    resolves it) to a JAX dtype."""
    name = resolve_compute_dtype(name)
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"model.compute_dtype={name!r} is not supported: use one of "
                         f"{sorted(COMPUTE_DTYPES) + ['auto']}")
    return COMPUTE_DTYPES[name]


def gather(table: jax.Array, ids: jax.Array) -> jax.Array:
    """The default embedding lookup of the models: ``table[ids]`` (XLA partitions it when the
    table is sharded over a mesh)."""
    return table[ids]


def uniform_fan_in_bias(fan_in: int):
    """PyTorch's default Linear/Conv bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class LayerNorm(nnx.Module):
    """LayerNorm whose statistics are taken in float32 and whose output is in ``dtype``.

    The reference uses eps 1e-8 (not 1e-5/1e-6); under mixed precision its LayerNorm runs in fp32.
    """

    def __init__(self, features: int, *, eps: float, dtype):
        self.scale = nnx.Param(jnp.ones((features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((features,), jnp.float32))
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * self.scale[...] + self.bias[...]).astype(self.dtype)


class MultiHeadAttention(nnx.Module):
    """torch.nn.MultiheadAttention semantics: fused q/k/v in-projection with bias, per-head scaled
    dot-product attention, dropout on the attention probabilities, output projection with bias.

    The fused in-projection kernel is one [H, 3H] matrix, so its xavier std is sqrt(2 / 4H) as in
    the reference (three separate [H, H] kernels would give sqrt(2 / 2H)). Biases start at zero.
    """

    def __init__(self, hidden: int, num_heads: int, *, dropout: float, dtype, rngs: nnx.Rngs):
        if hidden % num_heads:
            raise ValueError(f"hidden={hidden} is not divisible by num_heads={num_heads}: change one of them")
        self.num_heads = num_heads
        self.head_dim = hidden // num_heads
        self.dtype = dtype
        self.in_proj = nnx.Linear(hidden, 3 * hidden, dtype=dtype, kernel_init=xavier_normal, rngs=rngs)
        self.out_proj = nnx.Linear(hidden, hidden, dtype=dtype, kernel_init=xavier_normal, rngs=rngs)
        self.attn_dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, query: jax.Array, key_value: jax.Array, mask: jax.Array | None, *,
                 deterministic: bool) -> jax.Array:
        """query [B, Lq, H], key_value [B, Lk, H], mask bool[B or 1, 1, Lq, Lk] (True = may attend)."""
        hidden = query.shape[-1]
        w = self.in_proj.kernel[...]
        b = self.in_proj.bias[...]
        # Query and key/value come from different tensors (normalised vs raw h), so the fused
        # projection is applied in two parts.
        q = query.astype(self.dtype) @ w[:, :hidden].astype(self.dtype) + b[:hidden].astype(self.dtype)
        kv = key_value.astype(self.dtype) @ w[:, hidden:].astype(self.dtype) + b[hidden:].astype(self.dtype)
        k, v = jnp.split(kv, 2, axis=-1)

        def heads(t):  # [B, L, H] -> [B, heads, L, head_dim]
            return t.reshape(t.shape[:-1] + (self.num_heads, self.head_dim)).swapaxes(-3, -2)

        q, k, v = heads(q), heads(k), heads(v)
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32)
        scores = scores / math.sqrt(self.head_dim)
        if mask is not None:
            scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1)
        probs = self.attn_dropout(probs, deterministic=deterministic).astype(self.dtype)
        out = jnp.einsum("bhqk,bhkd->bhqd", probs, v)
        out = out.swapaxes(-3, -2).reshape(query.shape[:-1] + (hidden,))
        return self.out_proj(out)


class PointWiseFeedForward(nnx.Module):
    """SASRec's FFN: Dropout(W2 Dropout(ReLU(W1 u))), both H -> H with bias (inner width H, not 4H).

    Matrices xavier-normal; biases keep the PyTorch Conv1d default U(-1/sqrt(H), 1/sqrt(H)).
    """

    def __init__(self, hidden: int, *, dropout: float, dtype, rngs: nnx.Rngs):
        bias_init = uniform_fan_in_bias(hidden)
        self.w1 = nnx.Linear(hidden, hidden, dtype=dtype, kernel_init=xavier_normal, bias_init=bias_init, rngs=rngs)
        self.w2 = nnx.Linear(hidden, hidden, dtype=dtype, kernel_init=xavier_normal, bias_init=bias_init, rngs=rngs)
        self.dropout1 = nnx.Dropout(dropout, rngs=rngs)
        self.dropout2 = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, u: jax.Array, *, deterministic: bool) -> jax.Array:
        x = self.dropout1(jax.nn.relu(self.w1(u)), deterministic=deterministic)
        return self.dropout2(self.w2(x), deterministic=deterministic)


def causal_mask(length: int) -> jax.Array:
    """bool[1, 1, L, L]: position i may attend to positions j <= i."""
    return jnp.tril(jnp.ones((length, length), jnp.bool_))[None, None]
