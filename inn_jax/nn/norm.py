"""LayerNorm over the last axis (or, for narrow neurons, over the whole population's features),
with a gain and bias shared or (INN, neuron_identity="norm") per neuron."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from inn_jax.nn import neurons


class LayerNorm(nnx.Module):
  """Normalises x_...D in float32 (eps 1e-5, as PyTorch) and returns x's dtype.

  Args:
    d_model: D. n_neurons: N for per-neuron gains and biases (x_...NLD), else None.
    population: statistics over the neurons' features together (x_...NLD: axes N and D), not
      each neuron's own D: how narrow neurons are normalised. A neuron d_neuron wide normalised
      alone keeps d_neuron - 2 degrees of freedom (width 1: a constant, width 2: a sign), which
      would erase what a narrow neuron carries; over the population, the W = N x d_neuron
      features of a token are normalised as one layer of W units would be (under neuron
      parallelism: one all-reduce of two numbers per token).
    rngs: "params" (only with n_neurons: the gains' draws).

  With n_neurons, x is x_...NLD and each neuron has its own gain and bias; the gains start at
  1 + N(0, 0.2^2), as equal gains would give every neuron the same gradient.
  """

  def __init__(self, d_model: int, *, n_neurons: int | None = None, population: bool = False,
               rngs: nnx.Rngs | None = None):
    gain = lambda key, shape: 1.0 + (0.2 * jax.random.normal(key, shape)
                                     if n_neurons is not None else jnp.zeros(shape))
    key = rngs.params() if n_neurons is not None else None
    self.scale = neurons.param(gain, key, (d_model,), n_neurons)
    self.bias = neurons.param(lambda _, shape: jnp.zeros(shape), key, (d_model,), n_neurons)
    self.axes = (-3, -1) if population else (-1,)

  def __call__(self, x):
    f = x.astype(jnp.float32)
    mean = f.mean(self.axes, keepdims=True)
    f = (f - mean) * jax.lax.rsqrt(jnp.square(f - mean).mean(self.axes, keepdims=True) + 1e-5)
    f = f * neurons.per_step(self.scale) + neurons.per_step(self.bias)
    return f.astype(x.dtype)
