"""Parameters of a neuron population: one shared by all N neurons, or one per neuron; and the
storage dtype of a model's parameters (`store_params`).

A per-neuron parameter is a `NeuronParam` with a leading axis N holding N independent draws of
the shared parameter's initialiser (equal per-neuron values would get equal gradients, and the
neurons would never part). It applies to activations whose neuron axis is the third-last,
x_...NLX (N neurons, L steps, X features), and is split over the neuron mesh axis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from inn_jax import sharding
from inn_jax.sharding import NeuronParam


def param(init, key, shape, n_neurons: int | None = None) -> nnx.Param:
  """init(key, shape) as a shared Param, or (n_neurons given) a NeuronParam of n_neurons draws;
  key=None for a deterministic init."""
  if n_neurons is None:
    return nnx.Param(init(key, shape))
  if key is None:
    return NeuronParam(jnp.broadcast_to(init(None, shape), (n_neurons, *shape)))
  return NeuronParam(jax.vmap(lambda k: init(k, shape))(jax.random.split(key, n_neurons)))


def value(p: nnx.Param):
  """The parameter's value; a per-neuron one laid out over the neurons' mesh axis (a no-op
  without a mesh; on an Explicit mesh the neuron axes of a product must agree)."""
  if isinstance(p, NeuronParam):
    return sharding.constrain(p[...], sharding.NEURONS)
  return p[...]


def per_step(p: nnx.Param):
  """The value of a parameter of shape (X,) or (N, X), ready to broadcast against x_...NLX."""
  return value(p)[:, None] if isinstance(p, NeuronParam) else p[...]


class Dense(nnx.Module):
  """x @ kernel on the last axis; with n_neurons, neuron n's inputs x[..., n, :, :] use kernel n.

  kernel_init follows flax (key, shape, dtype); compute runs in `dtype`, parameters in float32.
  """

  def __init__(self, d_in: int, d_out: int, *, kernel_init, n_neurons: int | None = None,
               dtype=jnp.float32, rngs: nnx.Rngs):
    self.kernel = param(kernel_init, rngs.params(), (d_in, d_out), n_neurons)
    self.dtype = dtype

  def __call__(self, x):
    w = value(self.kernel).astype(self.dtype)
    x = x.astype(self.dtype)
    if isinstance(self.kernel, NeuronParam):
      return jnp.einsum("...nli,nio->...nlo", x, w)
    return jnp.einsum("...i,io->...o", x, w)


def store_params(module: nnx.Module, param_dtype) -> None:
  """Every floating nnx.Param of `module` (a whole model) stored in param_dtype: a model's
  config.param_dtype. Initialised in float32 first, so a bfloat16 model's parameters are its
  float32 twin's, rounded; the compute dtype (config.dtype) is separate. A no-op for float32."""
  param_dtype = jnp.dtype(param_dtype)
  if param_dtype == jnp.float32:
    return
  params = nnx.state(module, nnx.Param)
  nnx.update(module, jax.tree.map(
      lambda x: x.astype(param_dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params))
