"""Tests build models from the command line's flat options (as the trainer does) in one line."""

import jax.numpy as jnp

from inn_jax.models import build_model, model_config
from inn_jax.nn import MambaBlock, MambaConfig

_BLOCK = ("n_neurons", "dtype", "rngs")


def make(kind: str, vocab_size: int, *, rngs, **flat):
  """build_model of model_config(kind, **flat); a dtype may be given as a jnp dtype."""
  if "dtype" in flat:
    flat["dtype"] = jnp.dtype(flat["dtype"]).name
  return build_model(model_config(kind, **flat), vocab_size, rngs)


def block(d_model: int, **options):
  """MambaBlock(d_model, MambaConfig(**config options), n_neurons=, dtype=, rngs=)."""
  kw = {k: options.pop(k) for k in _BLOCK if k in options}
  return MambaBlock(d_model, MambaConfig(**options), **kw)
