"""Tests build models from the command line's flat options (as the trainer does) in one line."""

import jax
import jax.numpy as jnp
from flax import nnx

from inn_jax.models import INN, build_model, model_config
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


def sharded_inn(cfg, mesh, vocab_size: int = 27):
  """The INN built sharded on `mesh` (the usual NNX init: each weight where its logical axes
  say), in eval mode; call inside the mesh and the axis rules."""
  create = lambda: INN(cfg, vocab_size, rngs=nnx.Rngs(0))
  graphdef, abstract = nnx.split(nnx.eval_shape(create))
  state = jax.jit(lambda: nnx.state(create()),
                  out_shardings=nnx.get_named_sharding(abstract, mesh))()
  model = nnx.merge(graphdef, state)
  model.eval()
  return model
