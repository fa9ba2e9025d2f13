"""Population parameters and their products (inn_jax.nn.neurons): Dense against NumPy, shared and
per neuron, values and gradients, in each layout it takes (CPU rows, the contraction as written
when traced for a GPU or under a mesh of several devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from inn_jax import sharding
from inn_jax.nn import neurons
from inn_jax.ops import pallas_scan, targets_cpu


def dense(n_neurons, d_in=4, d_out=6):
  return neurons.Dense(d_in, d_out, kernel_init=nnx.initializers.lecun_normal(),
                       n_neurons=n_neurons, rngs=nnx.Rngs(0))


def numpy_value_and_grads(x, w, g):
  """y = x @ w per neuron (w (N, I, O), x (..., N, L, I)) or shared (w (I, O)); with the
  cotangent g of y: (y, dL/dx, dL/dw) for L = sum(g * y), in float64."""
  x, w, g = (np.asarray(a, np.float64) for a in (x, w, g))
  if w.ndim == 2:
    y = x @ w
    return y, g @ w.T, x.reshape(-1, x.shape[-1]).T @ g.reshape(-1, g.shape[-1])
  y = np.stack([x[..., n, :, :] @ w[n] for n in range(w.shape[0])], -3)
  gx = np.stack([g[..., n, :, :] @ w[n].T for n in range(w.shape[0])], -3)
  rows = lambda a, n: a[..., n, :, :].reshape(-1, a.shape[-1])
  gw = np.stack([rows(x, n).T @ rows(g, n) for n in range(w.shape[0])])
  return y, gx, gw


def value_and_grads(layer, x, g):
  graph, state = nnx.split(layer)
  w = jax.tree.leaves(state)[0]

  def f(x, w):
    return nnx.merge(graph, jax.tree.map(lambda _: w, state))(x)

  y, vjp = jax.vjp(f, x, w)
  return (y, *vjp(g)), w


def dots(layer, x):
  """The operand shapes of every dot_general in layer(x)'s jaxpr (each pair sorted)."""
  jaxpr = jax.make_jaxpr(lambda x: layer(x))(x)
  return [tuple(sorted(v.aval.shape for v in e.invars)) for e in jaxpr.jaxpr.eqns
          if e.primitive.name == "dot_general"]


@pytest.mark.parametrize("n_neurons,shape", [(3, (2, 3, 5, 4)), (3, (2, 2, 3, 5, 4)),
                                             (None, (2, 3, 5, 4)), (None, (7, 4))])
def test_dense_matches_numpy_values_and_gradients(n_neurons, shape):
  layer = dense(n_neurons)
  k = jax.random.split(jax.random.key(1), 2)
  x = jax.random.normal(k[0], shape)
  g = jax.random.normal(k[1], (*shape[:-1], 6))
  (y, gx, gw), w = value_and_grads(layer, x, g)
  want = numpy_value_and_grads(x, w, g)
  for got, ref in zip((y, gx, gw), want):
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_cpu_rows_are_the_layout_on_one_cpu_device():
  """On one CPU device the products are plain: per neuron (N, B*L, I) x (N, I, O), shared
  (B*N*L, I) x (I, O); traced for a GPU (the roofline's way) they are the contractions as
  written, over the population's axes, and compute the same values."""
  assert jax.default_backend() == "cpu" and targets_cpu()
  x = jax.random.normal(jax.random.key(2), (2, 3, 5, 4))
  per_neuron, shared = dense(3), dense(None)
  assert dots(per_neuron, x) == [((3, 4, 6), (3, 10, 4))]
  assert dots(shared, x) == [((4, 6), (30, 4))]
  with pallas_scan.traced_for(9.0):
    assert not targets_cpu()
    assert dots(per_neuron, x) == [((2, 3, 5, 4), (3, 4, 6))]
    assert dots(shared, x) == [((2, 3, 5, 4), (4, 6))]
    y_written = per_neuron(x), shared(x)
  y_rows = per_neuron(x), shared(x)
  for a, b in zip(y_rows, y_written):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


def test_a_mesh_of_several_devices_keeps_the_population_layout():
  """Under a 2 x 2 mesh (tests/conftest.py gives 4 fake CPU devices) the leading axes are split,
  so nothing merges them: the contractions as written, with the same values as on one device."""
  x = jax.random.normal(jax.random.key(3), (2, 2, 5, 4))
  layers = dense(2), dense(None)
  want = [np.asarray(layer(x)) for layer in layers]
  mesh = jax.make_mesh((2, 2), sharding.MESH_AXES,
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  with jax.set_mesh(mesh):
    assert not sharding.one_device() and not neurons.cpu_layouts()
    assert dots(layers[0], x) == [((2, 2, 5, 4), (2, 4, 6))]
    assert dots(layers[1], x) == [((2, 2, 5, 4), (4, 6))]
    got = [np.asarray(jax.jit(lambda x, m=m: m(x))(x)) for m in layers]
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  one = jax.make_mesh((1, 1), sharding.MESH_AXES, devices=jax.devices()[:1],
                      axis_types=(jax.sharding.AxisType.Auto,) * 2)
  with jax.set_mesh(one):
    assert sharding.one_device() and neurons.cpu_layouts()


def test_on_rows_keeps_an_nnx_linear_s_values():
  linear = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(4), (2, 3, 5, 4))
  got = neurons.on_rows(linear, x)
  assert got.shape == (2, 3, 5, 3)
  want = np.asarray(x, np.float64) @ np.asarray(linear.kernel[...], np.float64) + np.asarray(
      linear.bias[...], np.float64)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
  assert jnp.asarray(neurons.on_rows(linear, x[0, 0, 0])).shape == (3,)
