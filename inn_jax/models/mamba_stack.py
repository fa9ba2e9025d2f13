"""The paper's Mamba-stack baseline: the INN's memory without the population or communication."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from inn_jax.models import call_args
from inn_jax.nn import Embedder, LayerNorm, MambaBlock


class MambaStack(nnx.Module):
  """embed -> n_layers x [x + Mamba(LN(x))] -> LN -> head."""

  def __init__(self, vocab_size: int, *, d_model: int = 256, n_layers: int = 6,
               d_state: int = 16, d_conv: int = 4, expand: float = 2.0,
               dt_rank: int | str = "auto",
               tie_embeddings: bool = False, embed_init: str = "scaled", scan_method: str = "auto",
               scan_chunk: int = 64, dtype=jnp.float32, rngs: nnx.Rngs):
    self.embed = Embedder(vocab_size, d_model, init=embed_init, tie=tie_embeddings, dtype=dtype,
                          rngs=rngs)
    self.norms = nnx.List([LayerNorm(d_model) for _ in range(n_layers)])
    self.layers = nnx.List([
        MambaBlock(d_model, d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank,
                   scan_method=scan_method, scan_chunk=scan_chunk, dtype=dtype, rngs=rngs)
        for _ in range(n_layers)])
    self.final_norm = LayerNorm(d_model)

  def init_cache(self, batch_size: int):
    return [layer.init_cache(batch_size) for layer in self.layers]

  def __call__(self, tokens_BL, *, cache=None, return_cache: bool = False):
    """logits_BLV, or (logits_BLV, cache) with return_cache; `cache` (init_cache(batch), or
    one a call returned) continues an earlier call. Arguments: inn_jax.models.call_args."""
    call_args.check_tokens("MambaStack", tokens_BL)
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
