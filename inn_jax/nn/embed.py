"""Token embedding and output head (tied or untied), shared by every model."""

import math
import typing

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from inn_jax import sharding

EmbedInit = typing.Literal["scaled", "normal"]
EMBED_INITS = typing.get_args(EmbedInit)


class Embedder(nnx.Module):
  """Maps tokens to vectors (`encode`) and vectors to logits (`decode`).

  init="normal" is the paper's code: table ~ N(0, 1) used as is, so a tied head starts with logits
  of standard deviation ~sqrt(D) and an initial loss far above ln V. init="scaled" (our default)
  draws the table ~ N(0, 1/D) and multiplies the lookup by sqrt(D) (as Gemma does): inputs keep
  unit scale; the untied head (our default) starts near-uniform, so the initial loss is ~ln V.
  A tied head with a residual stream that carries the input embedding favours predicting the
  input token. The head bias starts at zero, or (init="normal") U(+-1/sqrt(D)) as the paper's
  nn.Linear head.

  Args:
    vocab_size: V. d_model: D. init: "scaled" or "normal" (above). tie: the head is the table's
      transpose. head_bias: a bias on the logits. dtype: compute dtype. rngs: "params".
  """

  def __init__(self, vocab_size: int, d_model: int, *, init: str = "scaled", tie: bool = True,
               head_bias: bool = True, dtype=jnp.float32, rngs: nnx.Rngs):
    if init not in EMBED_INITS:
      raise ValueError(f"embed_init={init!r} is not one of {EMBED_INITS}.")
    if not (isinstance(vocab_size, (int, np.integer)) and not isinstance(vocab_size, bool)
            and vocab_size >= 1):
      raise ValueError(f"vocab_size={vocab_size!r} must be a positive int, the number of token "
                       "ids (e.g. corpus.vocab.size).")
    self.vocab_size = int(vocab_size)
    std = 1.0 if init == "normal" else d_model ** -0.5
    self.scale = 1.0 if init == "normal" else math.sqrt(d_model)
    self.dtype = dtype
    self.table_VD = nnx.Param(nnx.initializers.normal(std)(rngs.params(), (vocab_size, d_model)))
    # An untied head starts small (logits ~ N(0, 0.1^2)) so the first loss is ~ln V.
    self.head_DV = None if tie else nnx.Param(
        nnx.initializers.normal(0.1 * d_model ** -0.5)(rngs.params(), (d_model, vocab_size)))
    # The paper's code builds its head as torch's nn.Linear(D, V), whose bias starts
    # U(-1/sqrt(D), 1/sqrt(D)); ours starts at zero.
    bound = d_model ** -0.5
    bias = (lambda: jax.random.uniform(rngs.params(), (vocab_size,), minval=-bound, maxval=bound)
            ) if init == "normal" else (lambda: jnp.zeros((vocab_size,)))
    self.bias_V = nnx.Param(bias()) if head_bias else None

  def encode(self, tokens_BL):
    """The ids' vectors; an id outside [0, V) gets NaN, not a real token's vector (a plain
    gather would clamp it to one): the models' call contract (inn_jax.models.call_args)."""
    valid_BL = (tokens_BL >= 0) & (tokens_BL < self.vocab_size)
    x_BLD = sharding.take_rows(self.table_VD[...], jnp.where(valid_BL, tokens_BL, 0))
    # Scaled in the wider of the table's and the compute dtype (a bfloat16 table, float32 compute:
    # float32, as its float32 twin).
    x_BLD = x_BLD.astype(jnp.promote_types(x_BLD.dtype, self.dtype))
    x_BLD = jnp.where(valid_BL[..., None], x_BLD, jnp.nan)
    return (x_BLD * self.scale).astype(self.dtype)

  def decode(self, x_BLD):
    w_DV = self.table_VD[...].T if self.head_DV is None else self.head_DV[...]
    logits_BLV = jnp.einsum("bld,dv->blv", x_BLD.astype(self.dtype), w_DV.astype(self.dtype),
                            preferred_element_type=jnp.float32)
    return logits_BLV if self.bias_V is None else logits_BLV + self.bias_V[...]
