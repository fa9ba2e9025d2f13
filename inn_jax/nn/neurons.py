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

from inn_jax import ops, sharding
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


def cpu_layouts() -> bool:
  """Whether to lay matmuls out for XLA's CPU backend: traced for a CPU (ops.targets_cpu) with no
  mesh of more than one device (sharding.one_device), so leading axes may be merged freely."""
  return ops.targets_cpu() and sharding.one_device()


def on_rows(fn, x):
  """fn, a map of x's last axis (a Dense or nnx.Linear); under cpu_layouts() with x's leading
  axes merged into one row axis: the matmul and its weight gradient are then plain 2-D
  products, which XLA's CPU backend runs faster than the same contraction over 3 or 4 axes
  (benchmarks/cpu_layouts.py). Elsewhere fn(x) as it is: the same values."""
  if x.ndim <= 2 or not cpu_layouts():
    return fn(x)
  y = fn(x.reshape(-1, x.shape[-1]))
  return y.reshape(*x.shape[:-1], y.shape[-1])


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
    if not isinstance(self.kernel, NeuronParam):
      return on_rows(lambda x: jnp.einsum("...i,io->...o", x, w), x)
    if x.ndim < 4 or not cpu_layouts():
      return jnp.einsum("...nli,nio->...nlo", x, w)
    # On CPU: neuron-major rows, (N, B*L, X), so the product is one batched matmul with the
    # batch axis leading (benchmarks/cpu_layouts.py); the einsum's own layout is slower on CPU.
    *lead, n, length, _ = x.shape
    x_NMI = jnp.moveaxis(x.reshape(-1, n, length, x.shape[-1]), 1, 0).reshape(n, -1, x.shape[-1])
    y_NMO = jnp.einsum("nmi,nio->nmo", x_NMI, w)
    y = jnp.moveaxis(y_NMO.reshape(n, -1, length, y_NMO.shape[-1]), 0, 1)
    return y.reshape(*lead, n, length, y_NMO.shape[-1])


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
