"""The paper's LSTM baseline: embed -> n_layers x LSTM -> head.

Parameters are laid out and initialised as PyTorch's nn.LSTM (gates i, f, g, o; two biases; all
U(+-1/sqrt(hidden))), so counts match: 4 * (in * hidden + hidden * hidden + 2 * hidden) per layer.
Each layer computes its input-to-gates projection for every step in one large matmul; only the
hidden-to-gates matmul runs inside `lax.scan`. When the embedding width differs from `hidden`, a
bias-free projection hidden -> d_embed feeds the head (tied or not), since the head reads
d_embed-wide vectors.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from inn_jax import typed
from inn_jax.models import call_args
from inn_jax.nn import Embedder, neurons
from inn_jax.nn.embed import EmbedInit
from inn_jax.nn.dropout import dropout as dropout_layer


class LSTMCache(NamedTuple):
  """Recurrent state of one layer, float32."""
  h_BU: jax.Array
  c_BU: jax.Array


class LSTMLayer(nnx.Module):
  """One LSTM layer over a whole sequence: x_BLI -> h_BLU."""

  def __init__(self, d_in: int, hidden: int, *, scan_unroll: int = 1, dtype=jnp.float32,
               rngs: nnx.Rngs):
    bound = 1 / math.sqrt(hidden)
    init = lambda *shape: nnx.Param(jax.random.uniform(rngs.params(), shape, minval=-bound,
                                                       maxval=bound))
    self.hidden, self.scan_unroll, self.dtype = hidden, scan_unroll, dtype
    self.w_ih_IG = init(d_in, 4 * hidden)  # G = 4 U, gates in PyTorch's order i, f, g, o.
    self.w_hh_UG = init(hidden, 4 * hidden)
    self.b_ih_G = init(4 * hidden)
    self.b_hh_G = init(4 * hidden)

  def init_cache(self, batch_size: int) -> LSTMCache:
    zeros = jnp.zeros((batch_size, self.hidden), jnp.float32)
    return LSTMCache(zeros, zeros)

  def __call__(self, x_BLI, cache: LSTMCache):
    xg_BLG = jnp.einsum("bli,ig->blg", x_BLI.astype(self.dtype),
                        self.w_ih_IG[...].astype(self.dtype), preferred_element_type=jnp.float32)
    xg_LBG = jnp.swapaxes(xg_BLG + self.b_ih_G[...] + self.b_hh_G[...], 0, 1)
    w_hh_UG = self.w_hh_UG[...].astype(self.dtype)

    def step(state, xg_BG):
      h_BU, c_BU = state
      g_BG = xg_BG + jnp.dot(h_BU.astype(self.dtype), w_hh_UG, preferred_element_type=jnp.float32)
      i_BU, f_BU, g_BU, o_BU = jnp.split(g_BG, 4, axis=-1)
      c_BU = jax.nn.sigmoid(f_BU) * c_BU + jax.nn.sigmoid(i_BU) * jnp.tanh(g_BU)
      h_BU = jax.nn.sigmoid(o_BU) * jnp.tanh(c_BU)
      return LSTMCache(h_BU, c_BU), h_BU

    cache, h_LBU = jax.lax.scan(step, LSTMCache(*cache), xg_LBG, unroll=self.scan_unroll)
    return jnp.swapaxes(h_LBU, 0, 1).astype(self.dtype), cache


@dataclasses.dataclass(frozen=True)
class LSTMConfig(typed.Config):
  """The LSTM (Table 2's baseline; the paper's 3 x 512 by default).

  Attributes:
    hidden: U; n_layers: stacked layers; d_embed: the embedding width (None: U, no projection;
      a tied head is then exactly the usual one); dropout: on the inputs of layers 2..n (as
      nn.LSTM's); tie_embeddings, embed_init: as INNConfig's; scan_unroll: lax.scan's unroll of
      the time loop (speed only); dtype: compute dtype.
    param_dtype: the parameters' storage dtype (float32; bfloat16 halves the parameters' and the
      optimiser moments' memory); compute stays `dtype`.
  """
  hidden: int = 512
  n_layers: int = 3
  d_embed: int | None = None
  dropout: float = 0.1
  tie_embeddings: bool = True
  embed_init: EmbedInit = "scaled"
  scan_unroll: int = 1
  dtype: typed.DType = "float32"
  param_dtype: typed.DType = "float32"

  FLAT: ClassVar[dict] = {}

  def check(self):
    typed.positive("LSTMConfig", hidden=self.hidden, n_layers=self.n_layers,
                   scan_unroll=self.scan_unroll)
    if self.d_embed is not None:
      typed.positive("LSTMConfig", d_embed=self.d_embed)
    typed.rate("LSTMConfig", dropout=self.dropout)


class LSTM(nnx.Module):
  """embed -> n_layers x LSTM (dropout between layers, as nn.LSTM) -> [proj] -> head.

  Args: config (LSTMConfig), vocab_size (V), rngs (nnx.Rngs: "params", and "dropout" unless the
  calls that train pass rngs). Call: as INN's.
  """

  is_recurrent: ClassVar[bool] = True

  def __init__(self, config: LSTMConfig, vocab_size: int, *, rngs: nnx.Rngs):
    if not isinstance(config, LSTMConfig):
      raise TypeError(f"LSTM(config, vocab_size, *, rngs): config must be an LSTMConfig, got "
                      f"{type(config).__name__}.")
    self.config = config
    hidden, n_layers, dropout = config.hidden, config.n_layers, config.dropout
    tie_embeddings, embed_init = config.tie_embeddings, config.embed_init
    scan_unroll, dtype = config.scan_unroll, jnp.dtype(config.dtype)
    d_embed = hidden if config.d_embed is None else config.d_embed
    self.embed = Embedder(vocab_size, d_embed, init=embed_init, tie=tie_embeddings, dtype=dtype,
                          rngs=rngs)
    self.layers = nnx.List([
        LSTMLayer(d_embed if i == 0 else hidden, hidden, scan_unroll=scan_unroll, dtype=dtype,
                  rngs=rngs) for i in range(n_layers)])
    self.dropout = dropout_layer(dropout, rngs)
    self.proj = (None if d_embed == hidden else
                 nnx.Linear(hidden, d_embed, use_bias=False, dtype=dtype, rngs=rngs))
    neurons.store_params(self, config.param_dtype)

  def init_cache(self, batch_size: int, max_len: int | None = None) -> list[LSTMCache]:
    """An empty state for `batch_size` rows (max_len unused: the state has a fixed size)."""
    return [layer.init_cache(batch_size) for layer in self.layers]

  def __call__(self, tokens_BL, *, cache=None, deterministic: bool | None = None, rngs=None,
               return_cache: bool = False):
    """logits_BLV, or (logits_BLV, cache) with return_cache; `cache` (init_cache(batch), or
    one a call returned) continues an earlier call; deterministic, rngs: as INN's.
    Arguments: inn_jax.models.call_args."""
    call_args.check_tokens("LSTM", tokens_BL, self.embed.vocab_size)
    if cache is not None:
      call_args.check_cache("LSTM", cache, lambda: self.init_cache(tokens_BL.shape[0]),
                            tokens_BL.shape[0])
    rngs = call_args.dropout_rngs("LSTM", rngs, [self.dropout], deterministic)
    drop = lambda x: self.dropout(x, deterministic=deterministic, rngs=rngs)
    x_BLD = self.embed.encode(tokens_BL)
    cache = cache if cache is not None else self.init_cache(tokens_BL.shape[0])
    new_cache = []
    for i, (layer, layer_cache) in enumerate(zip(self.layers, cache)):
      x_BLD, layer_cache = layer(drop(x_BLD) if i else x_BLD, layer_cache)
      new_cache.append(layer_cache)
    if self.proj is not None:
      x_BLD = self.proj(x_BLD)
    logits_BLV = self.embed.decode(x_BLD)
    return (logits_BLV, new_cache) if return_cache else logits_BLV
