"""The paper's Transformer baseline: causal, sinusoidal positions, pre-LN blocks.

    x = Embed(tokens) + Sinusoid(positions)
    n_layers x [x = x + Drop(MHA(LN(x))); x = x + Drop(FFN(LN(x)))],  FFN = Linear-act-Linear
    logits = Head(LN(x))

Attention uses one fused QKV projection (with bias) and dropout on the attention weights, as
PyTorch's nn.MultiheadAttention. The FFN activation is exact GELU by default ("relu" selectable).
Dropout (one rate) acts on embeddings + positions, attention weights, the FFN hidden layer and
both sub-layer outputs, as nn.TransformerEncoderLayer does.

Decoding keeps a KV cache of `max_len` slots with a position counter: a call writes its keys and
values at the counter and its queries see every slot at or before their own position, so chained
calls equal one full call. A cache holds at most `max_len` positions: an eager call past it
raises; under jit (counter traced) its logits are NaN.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from inn_jax import typed
from inn_jax.models import call_args
from inn_jax.nn import Embedder, LayerNorm, neurons
from inn_jax.nn.embed import EmbedInit
from inn_jax.nn.dropout import dropout as dropout_layer

ACTIVATIONS = {"gelu": lambda x: jax.nn.gelu(x, approximate=False), "relu": jax.nn.relu}
Activation = typing.Literal["gelu", "relu"]
# PyTorch's default Linear init, U(+-1/sqrt(fan_in)).
_torch_init = nnx.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def _module_dropout(module, x):
  return module(x)


class KVCache(NamedTuple):
  """Keys and values of each layer for `max_len` positions; `pos` counts those already written."""
  k_BPHK: tuple[jax.Array, ...]  # One per layer; T = max_len.
  v_BPHK: tuple[jax.Array, ...]
  pos: jax.Array  # int32 scalar.


def sinusoid(positions_L, d_model: int):
  """Vaswani et al.'s encoding: sin at even features, cos at odd ones."""
  freqs_d = jnp.exp(jnp.arange(0, d_model, 2, dtype=jnp.float32) * (-math.log(1e4) / d_model))
  angles_Ld = positions_L.astype(jnp.float32)[:, None] * freqs_d
  return jnp.stack([jnp.sin(angles_Ld), jnp.cos(angles_Ld)], axis=-1).reshape(-1, d_model)


def _positions(cache, default: int) -> int:
  """The positions P a cache holds (its first layer's keys), or `default` where it has none."""
  try:
    return int(cache.k_BPHK[0].shape[1])
  except (AttributeError, IndexError, TypeError):
    return default


class Attention(nnx.Module):
  """Causal multi-head self-attention that reads and extends a layer's KV cache."""

  def __init__(self, d_model: int, n_heads: int, dropout: float, *, dtype, rngs: nnx.Rngs):
    self.n_heads, self.dtype = n_heads, dtype
    self.qkv = nnx.Linear(d_model, 3 * d_model, dtype=dtype, rngs=rngs,
                          kernel_init=nnx.initializers.xavier_uniform())
    self.out = nnx.Linear(d_model, d_model, dtype=dtype, rngs=rngs, kernel_init=_torch_init)
    self.dropout = dropout_layer(dropout, rngs)

  def __call__(self, x_BLD, k_BPHK, v_BPHK, pos, drop=_module_dropout):
    """Writes this call's keys/values at `pos` (if a cache is given) and attends causally;
    drop(module, x) applies a dropout module as the call asks (default: its own mode)."""
    batch, length, width = x_BLD.shape
    qkv = self.qkv(x_BLD).reshape(batch, length, 3, self.n_heads, width // self.n_heads)
    q_BLHK, k_BLHK, v_BLHK = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if k_BPHK is None:  # No cache: keys are this call's, at positions 0..L-1.
      k_BPHK, v_BPHK = k_BLHK, v_BLHK
    else:
      at = (0, pos, 0, 0)
      k_BPHK = jax.lax.dynamic_update_slice(k_BPHK, k_BLHK.astype(k_BPHK.dtype), at)
      v_BPHK = jax.lax.dynamic_update_slice(v_BPHK, v_BLHK.astype(v_BPHK.dtype), at)
    logits_BHLP = jnp.einsum("blhk,bthk->bhlt", q_BLHK, k_BPHK.astype(self.dtype),
                             preferred_element_type=jnp.float32) * (width // self.n_heads) ** -0.5
    seen_LP = jnp.arange(k_BPHK.shape[1])[None, :] <= (pos + jnp.arange(length))[:, None]
    # Masked entries get probability exactly 0 (exp(-inf)); every row sees at least itself.
    w_BHLP = jax.nn.softmax(jnp.where(seen_LP, logits_BHLP, -jnp.inf), axis=-1)
    w_BHLP = drop(self.dropout, w_BHLP).astype(self.dtype)
    o_BLHK = jnp.einsum("bhlt,bthk->blhk", w_BHLP, v_BPHK.astype(self.dtype))
    return self.out(o_BLHK.reshape(batch, length, width)), k_BPHK, v_BPHK


class Block(nnx.Module):
  """x + Drop(MHA(LN(x))), then x + Drop(FFN(LN(x)))."""

  def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, activation: str, *,
               dtype, rngs: nnx.Rngs):
    self.attn_norm = LayerNorm(d_model)
    self.attn = Attention(d_model, n_heads, dropout, dtype=dtype, rngs=rngs)
    self.ffn_norm = LayerNorm(d_model)
    self.ffn_in = nnx.Linear(d_model, d_ff, dtype=dtype, rngs=rngs, kernel_init=_torch_init)
    self.ffn_out = nnx.Linear(d_ff, d_model, dtype=dtype, rngs=rngs, kernel_init=_torch_init)
    self.act = ACTIVATIONS[activation]
    self.dropout = dropout_layer(dropout, rngs)

  def __call__(self, x_BLD, k_BPHK, v_BPHK, pos, drop=_module_dropout):
    a_BLD, k_BPHK, v_BPHK = self.attn(self.attn_norm(x_BLD), k_BPHK, v_BPHK, pos, drop)
    x_BLD = x_BLD + drop(self.dropout, a_BLD)
    f_BLD = self.ffn_out(drop(self.dropout, self.act(self.ffn_in(self.ffn_norm(x_BLD)))))
    return x_BLD + drop(self.dropout, f_BLD), k_BPHK, v_BPHK


@dataclasses.dataclass(frozen=True)
class TransformerConfig(typed.Config):
  """The Transformer (Table 2's baseline: 6 layers, 4 heads, d_model 256, d_ff 1024).

  Attributes:
    d_model: D (even, divisible by n_heads); n_layers; n_heads: H; d_ff: F; dropout: one rate
    for embeddings, attention weights, the FFN and both sub-layer outputs; activation: the FFN's;
    max_len: positions a cache holds by default; tie_embeddings, embed_init: as INNConfig's;
    dtype: compute dtype.
    param_dtype: the parameters' storage dtype (float32; bfloat16 halves the parameters' and the
      optimiser moments' memory); compute stays `dtype`.
  """
  d_model: int = 256
  n_layers: int = 6
  n_heads: int = 4
  d_ff: int = 1024
  dropout: float = 0.1
  activation: Activation = "gelu"
  max_len: int = 1024
  tie_embeddings: bool = True
  embed_init: EmbedInit = "scaled"
  dtype: typed.DType = "float32"
  param_dtype: typed.DType = "float32"

  FLAT: ClassVar[dict] = {}

  def check(self):
    typed.positive("TransformerConfig", d_model=self.d_model, n_layers=self.n_layers,
                   n_heads=self.n_heads, d_ff=self.d_ff, max_len=self.max_len)
    typed.rate("TransformerConfig", dropout=self.dropout)
    if self.d_model % self.n_heads or self.d_model % 2:
      raise ValueError(f"TransformerConfig: d_model={self.d_model} must be even and divisible "
                       f"by n_heads={self.n_heads}.")


class Transformer(nnx.Module):
  """Causal pre-LN Transformer with sinusoidal positions: tokens_BL -> logits_BLV.

  Args: config (TransformerConfig), vocab_size (V), rngs (nnx.Rngs: "params", and "dropout"
  unless the calls that train pass rngs). Call: as INN's; a cache is a KV cache of
  init_cache(batch, max_len) positions.
  """

  is_recurrent: ClassVar[bool] = False  # A KV cache is not a state carried between windows.

  def __init__(self, config: TransformerConfig, vocab_size: int, *, rngs: nnx.Rngs):
    if not isinstance(config, TransformerConfig):
      raise TypeError(f"Transformer(config, vocab_size, *, rngs): config must be a "
                      f"TransformerConfig, got {type(config).__name__}.")
    self.config = config
    d_model, n_layers, n_heads, d_ff = config.d_model, config.n_layers, config.n_heads, config.d_ff
    dropout, activation, max_len = config.dropout, config.activation, config.max_len
    tie_embeddings, embed_init, dtype = (config.tie_embeddings, config.embed_init,
                                         jnp.dtype(config.dtype))
    self.d_model, self.n_heads, self.max_len, self.dtype = d_model, n_heads, max_len, dtype
    self.embed = Embedder(vocab_size, d_model, init=embed_init, tie=tie_embeddings, dtype=dtype,
                          rngs=rngs)
    self.dropout = dropout_layer(dropout, rngs)
    self.blocks = nnx.List([Block(d_model, n_heads, d_ff, dropout, activation, dtype=dtype,
                                  rngs=rngs) for _ in range(n_layers)])
    self.final_norm = LayerNorm(d_model)
    neurons.store_params(self, config.param_dtype)

  def init_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
    max_len = self.max_len if max_len is None else max_len
    zeros = lambda: tuple(jnp.zeros((batch_size, max_len, self.n_heads,
                                     self.d_model // self.n_heads), self.dtype)
                          for _ in self.blocks)
    return KVCache(zeros(), zeros(), jnp.zeros((), jnp.int32))

  def __call__(self, tokens_BL, *, cache: KVCache | None = None,
               deterministic: bool | None = None, rngs=None, return_cache: bool = False):
    """logits_BLV, or (logits_BLV, cache) with return_cache; `cache` (init_cache(batch), or
    one a call returned) continues at its position counter; deterministic, rngs: as INN's.
    Arguments: inn_jax.models.call_args (a cache of any number of positions P)."""
    call_args.check_tokens("Transformer", tokens_BL, self.embed.vocab_size)
    rngs = call_args.dropout_rngs("Transformer", rngs, self._dropouts(), deterministic)
    drop = lambda module, x: module(x, deterministic=deterministic, rngs=rngs)
    batch, length = tokens_BL.shape
    if cache is not None:
      call_args.check_cache("Transformer", cache,
                            lambda: self.init_cache(batch, _positions(cache, self.max_len)), batch)
    if cache is None and return_cache:
      cache = self.init_cache(batch)
    limit = self.max_len if cache is None else cache.k_BPHK[0].shape[1]
    pos = 0 if cache is None else cache.pos
    traced = isinstance(pos, jax.core.Tracer)
    end = length if traced else int(pos) + length
    if end > limit:
      raise ValueError(f"Transformer: positions up to {end} exceed max_len={limit}; raise the "
                       "model's max_len (or pass max_len to init_cache).")
    x_BLD = self.embed.encode(tokens_BL)
    x_BLD = drop(self.dropout, x_BLD + sinusoid(pos + jnp.arange(length), self.d_model).astype(
        x_BLD.dtype))
    ks, vs = [], []
    for i, block in enumerate(self.blocks):
      k_BPHK, v_BPHK = (None, None) if cache is None else (cache.k_BPHK[i], cache.v_BPHK[i])
      x_BLD, k_BPHK, v_BPHK = block(x_BLD, k_BPHK, v_BPHK, pos, drop)
      ks.append(k_BPHK)
      vs.append(v_BPHK)
    logits_BLV = self.embed.decode(self.final_norm(x_BLD))
    if traced:  # Past the end dynamic_update_slice would clamp silently: make it loud instead.
      logits_BLV = jnp.where(pos + length > limit, jnp.nan, logits_BLV)
    if not return_cache:
      return logits_BLV
    return logits_BLV, KVCache(tuple(ks), tuple(vs), pos + length)

  def _dropouts(self):
    return [self.dropout] + [d for b in self.blocks for d in (b.dropout, b.attn.dropout)]
