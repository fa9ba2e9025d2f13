"""The paper's Mamba-stack baseline: the INN's memory without the population or communication."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp
from flax import nnx

from inn_jax import typed
from inn_jax.models import call_args
from inn_jax.nn import Embedder, LayerNorm, MambaBlock, MambaConfig, neurons
from inn_jax.nn.embed import EmbedInit


@dataclasses.dataclass(frozen=True)
class MambaStackConfig(typed.Config):
  """The Mamba stack (Table 2's baseline). Preset: `paper_code()` (2,637,083 parameters with
  vocabulary 27, exactly the official code's).

  Attributes:
    d_model: D; n_layers: blocks; memory: each block (MambaConfig; fields left None: expand 2,
      neuron_params "shared").
    tie_embeddings, embed_init: as INNConfig's. dtype: compute dtype.
    param_dtype: the parameters' storage dtype (float32; bfloat16 halves the parameters' and the
      optimiser moments' memory); compute stays `dtype`.
  """
  d_model: int = 256
  n_layers: int = 6
  memory: MambaConfig = MambaConfig()
  tie_embeddings: bool = False
  embed_init: EmbedInit = "scaled"
  dtype: typed.DType = "float32"
  param_dtype: typed.DType = "float32"

  FLAT: ClassVar[dict] = {k: ("memory", k) for k in ("d_state", "d_conv", "expand", "dt_rank",
                                                      "scan_method", "scan_chunk")}

  def __post_init__(self):
    if isinstance(self.memory, MambaConfig):
      object.__setattr__(self, "memory", self.memory.with_defaults(expand=2.0,
                                                                   neuron_params="shared"))
    super().__post_init__()

  def check(self):
    typed.positive("MambaStackConfig", d_model=self.d_model, n_layers=self.n_layers)
    if self.memory.expand is None or self.memory.neuron_params != "shared":
      raise ValueError("MambaStackConfig.memory: a number for expand and neuron_params='shared' "
                       "(a stack has no neurons).")

  @classmethod
  def paper_code(cls, **changes) -> MambaStackConfig:
    """The official code's Mamba stack: a head tied to an N(0, 1) embedding."""
    return dataclasses.replace(cls(tie_embeddings=True, embed_init="normal"), **changes)


class MambaStack(nnx.Module):
  """embed -> n_layers x [x + Mamba(LN(x))] -> LN -> head.

  Args: config (MambaStackConfig), vocab_size (V), rngs (nnx.Rngs with "params").
  Call: as INN's (tokens_BL -> logits_BLV; cache, return_cache; deterministic and rngs are
  accepted and unused: the stack has no dropout).
  """

  is_recurrent: ClassVar[bool] = True

  def __init__(self, config: MambaStackConfig, vocab_size: int, *, rngs: nnx.Rngs):
    if not isinstance(config, MambaStackConfig):
      raise TypeError(f"MambaStack(config, vocab_size, *, rngs): config must be a "
                      f"MambaStackConfig, got {type(config).__name__}.")
    self.config = config
    d_model, dtype = config.d_model, jnp.dtype(config.dtype)
    self.embed = Embedder(vocab_size, d_model, init=config.embed_init,
                          tie=config.tie_embeddings, dtype=dtype, rngs=rngs)
    self.norms = nnx.List([LayerNorm(d_model) for _ in range(config.n_layers)])
    self.layers = nnx.List([MambaBlock(d_model, config.memory, dtype=dtype, rngs=rngs)
                            for _ in range(config.n_layers)])
    self.final_norm = LayerNorm(d_model)
    neurons.store_params(self, config.param_dtype)

  def init_cache(self, batch_size: int, max_len: int | None = None):
    """An empty state for `batch_size` rows (max_len unused: the state has a fixed size)."""
    return [layer.init_cache(batch_size) for layer in self.layers]

  def __call__(self, tokens_BL, *, cache=None, deterministic: bool | None = None, rngs=None,
               return_cache: bool = False):
    """logits_BLV, or (logits_BLV, cache) with return_cache; `cache` (init_cache(batch), or
    one a call returned) continues an earlier call. Arguments: inn_jax.models.call_args."""
    call_args.check_tokens("MambaStack", tokens_BL, self.embed.vocab_size)
    call_args.check_deterministic("MambaStack", deterministic)  # No dropout, but the contract's.
    if cache is not None:
      call_args.check_cache("MambaStack", cache, lambda: self.init_cache(tokens_BL.shape[0]),
                            tokens_BL.shape[0])
    x_BLD = self.embed.encode(tokens_BL)
    cache = cache if cache is not None else [None] * len(self.layers)
    new_cache = []
    for norm, layer, layer_cache in zip(self.norms, self.layers, cache):
      y_BLD, layer_cache = layer(norm(x_BLD), cache=layer_cache, return_cache=True)
      x_BLD = x_BLD + y_BLD
      new_cache.append(layer_cache)
    logits_BLV = self.embed.decode(self.final_norm(x_BLD))
    return (logits_BLV, new_cache) if return_cache else logits_BLV
