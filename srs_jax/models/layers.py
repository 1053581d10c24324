"""The block library of the sequential models: SASRec's and BERT4Rec's transformer pieces.

Parameters are always float32; ``dtype`` is the compute dtype of activations and matmuls. Both
models' attention runs through ``dot_product_attention`` (float32 scores and softmax, a finite
floor for masked keys, dropout on the probabilities).

* SASRec (as MemoryEfficientSRS builds it): ``LayerNorm`` (float32 statistics, eps
  1e-8), ``MultiHeadAttention`` (PyTorch semantics), ``PointWiseFeedForward``, the pre-LN
  ``PreLNBlock``; every matrix initialised as PyTorch's ``xavier_normal_`` (a plain normal with
  std ``sqrt(2 / (fan_in + fan_out))``).
* BERT4Rec (the paper's arrangement): ``bert_layer_norm`` (eps 1e-12, float32), ``bert_dense``
  (truncated normal, std 0.02), ``SelfAttention`` (fused q/k/v projection, padded keys masked)
  and the post-LN ``PostLNBlock``.
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


def dot_product_attention(q, k, v, mask, *, dropout: nnx.Dropout, deterministic: bool, dtype,
                          divide: bool = True, heads_first: bool = True) -> jax.Array:
    """Multi-head attention of ``q, k, v [B, heads, L, head_dim]`` -> ``[B, heads, Lq, head_dim]``
    (``heads_first=False``: ``[B, L, heads, head_dim]`` in and out, without transposes).

    Scores and softmax in float32; ``mask`` (bool, broadcast to ``[B, heads, Lq, Lk]``, True = may
    attend) puts a finite floor (not -inf) on masked keys, so all-masked rows stay finite; dropout
    on the probabilities, which are cast to ``dtype`` for the weighted sum. ``divide``: scores
    ``/ sqrt(head_dim)`` (PyTorch, SASRec) or ``* head_dim ** -0.5`` (BERT's code, BERT4Rec); the
    two differ in the last bit, and each model keeps its reference's.
    """
    head_dim = q.shape[-1]
    qk, pv = (("bhqd,bhkd->bhqk", "bhqk,bhkd->bhqd") if heads_first
              else ("bqhd,bkhd->bhqk", "bhqk,bkhd->bqhd"))
    scores = jnp.einsum(qk, q, k, preferred_element_type=jnp.float32)
    scores = scores / math.sqrt(head_dim) if divide else scores * (head_dim**-0.5)
    if mask is not None:
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    probs = dropout(probs, deterministic=deterministic).astype(dtype)
    return jnp.einsum(pv, probs, v)


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

        out = dot_product_attention(heads(q), heads(k), heads(v), mask, dropout=self.attn_dropout,
                                    deterministic=deterministic, dtype=self.dtype)
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


class PreLNBlock(nnx.Module):
    """SASRec's block: pre-LN attention with the residual from the normalised query, then LN + FFN."""

    def __init__(self, hidden: int, num_heads: int, *, dropout: float, eps: float, dtype,
                 rngs: nnx.Rngs):
        self.attn_norm = LayerNorm(hidden, eps=eps, dtype=dtype)
        self.attn = MultiHeadAttention(hidden, num_heads, dropout=dropout, dtype=dtype, rngs=rngs)
        self.ffn_norm = LayerNorm(hidden, eps=eps, dtype=dtype)
        self.ffn = PointWiseFeedForward(hidden, dropout=dropout, dtype=dtype, rngs=rngs)

    def __call__(self, h, keep, mask, *, deterministic: bool):
        """h [B, L, H], keep [B, L, 1] (1 = real item), mask bool[1, 1, L, L]."""
        q = self.attn_norm(h)
        h = q + self.attn(q, h, mask, deterministic=deterministic)
        u = self.ffn_norm(h)
        h = u + self.ffn(u, deterministic=deterministic)
        return h * keep


# ------------------------------------------------------------------------------- BERT4Rec's pieces

BERT_LN_EPS = 1e-12  # BERT's LayerNorm epsilon; LayerNorm runs in float32
BERT_INIT_STD = 0.02  # BERT's truncated-normal initialiser range
trunc_normal = nnx.initializers.truncated_normal(stddev=BERT_INIT_STD)


def bert_layer_norm(features: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """BERT's LayerNorm: eps 1e-12, computed and returned in float32."""
    return nnx.LayerNorm(features, epsilon=BERT_LN_EPS, dtype=jnp.float32, param_dtype=jnp.float32,
                         rngs=rngs)


def bert_dense(n_in: int, n_out: int, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    """A dense layer with BERT's truncated-normal kernel and zero bias (float32 parameters)."""
    return nnx.Linear(n_in, n_out, dtype=dtype, param_dtype=jnp.float32, kernel_init=trunc_normal,
                      rngs=rngs)


class SelfAttention(nnx.Module):
    """Bidirectional multi-head self-attention (fused q/k/v projection) that never attends to
    padded keys."""

    def __init__(self, hidden: int, num_heads: int, dropout: float, dtype, *, rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.dtype = dtype
        self.qkv = bert_dense(hidden, 3 * hidden, dtype, rngs)
        self.out = bert_dense(hidden, hidden, dtype, rngs)
        self.prob_dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x: jax.Array, key_valid: jax.Array, *, deterministic: bool) -> jax.Array:
        """x: [B, T, H] (compute dtype); key_valid: bool[B, T]. Returns [B, T, H]."""
        b, t, h = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, h // self.num_heads)
        ctx = dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], key_valid[:, None, None, :],
                                    dropout=self.prob_dropout, deterministic=deterministic,
                                    dtype=self.dtype, divide=False, heads_first=False)
        return self.out(ctx.reshape(b, t, h))


class PostLNBlock(nnx.Module):
    """BERT's post-LN block: ``LN(x + Drop(MHA(x)))``, ``LN(a + Drop(FFN(a)))``, FFN = Linear(H, 4H),
    GELU (erf form), Linear(4H, H)."""

    def __init__(self, hidden: int, num_heads: int, dropout: float, dtype, *, rngs: nnx.Rngs):
        self.dtype = dtype
        self.attention = SelfAttention(hidden, num_heads, dropout, dtype, rngs=rngs)
        self.attention_dropout = nnx.Dropout(dropout, rngs=rngs)
        self.attention_norm = bert_layer_norm(hidden, rngs)
        self.ffn_in = bert_dense(hidden, 4 * hidden, dtype, rngs)
        self.ffn_out = bert_dense(4 * hidden, hidden, dtype, rngs)
        self.ffn_dropout = nnx.Dropout(dropout, rngs=rngs)
        self.ffn_norm = bert_layer_norm(hidden, rngs)

    def __call__(self, x: jax.Array, key_valid: jax.Array, *, deterministic: bool) -> jax.Array:
        a = self.attention(x, key_valid, deterministic=deterministic)
        a = self.attention_dropout(a, deterministic=deterministic)
        x = self.attention_norm(x.astype(jnp.float32) + a.astype(jnp.float32)).astype(self.dtype)
        f = self.ffn_out(jax.nn.gelu(self.ffn_in(x), approximate=False))
        f = self.ffn_dropout(f, deterministic=deterministic)
        return self.ffn_norm(x.astype(jnp.float32) + f.astype(jnp.float32)).astype(self.dtype)
