"""MambaBlock: upstream parameters and init, a NumPy forward, leading axes and per-neuron
parameters, and recurrent decoding."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from inn_jax.nn import MambaBlock
from tests.test_scan import numpy_scan
from tests.build import block as mamba_block


def params(block):
  return {"/".join(map(str, k)): np.asarray(v[...])
          for k, v in nnx.to_flat_state(nnx.state(block, nnx.Param))}


def test_parameter_count_matches_upstream_formula():
  d, s, k, e = 256, 16, 4, 2
  di, r = e * d, math.ceil(d / 16)
  upstream = (d * 2 * di) + (di * k + di) + di * (r + 2 * s) + (r * di + di) + di * s + di + di * d
  block = mamba_block(d, d_state=s, d_conv=k, expand=e, rngs=nnx.Rngs(0))
  assert sum(v.size for v in params(block).values()) == upstream == 437_760


def test_upstream_initialisation():
  block = mamba_block(64, d_state=8, rngs=nnx.Rngs(3))
  p = params(block)
  dt = np.log1p(np.exp(p["dt_bias_E"]))
  assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
  assert np.log(dt).std() > 0.5  # Log-uniform over two decades, not a constant.
  bound = block.dt_rank ** -0.5
  assert np.abs(p["dt_proj/kernel"]).max() <= bound and p["dt_proj/kernel"].min() < -bound / 2
  np.testing.assert_allclose(np.exp(p["A_log_ES"]), np.tile(np.arange(1, 9), (128, 1)), rtol=1e-6)
  np.testing.assert_array_equal(p["D_E"], np.ones(128))


def numpy_block(p, x, d_conv, dt_rank, d_state):
  """The upstream slow path (conv, projections, scan, gate) written in NumPy float64."""
  x = np.asarray(x, np.float64)
  xz = x @ p["in_proj/kernel"]
  xs, z = np.split(xz, 2, axis=-1)
  length = xs.shape[1]
  pad = np.concatenate([np.zeros((xs.shape[0], d_conv - 1, xs.shape[2])), xs], 1)
  conv = sum(pad[:, k:k + length] * p["conv_WE"][k] for k in range(d_conv)) + p["conv_bias_E"]
  xs = conv / (1 + np.exp(-conv))
  dbc = xs @ p["x_proj/kernel"]
  dt, B, C = dbc[..., :dt_rank], dbc[..., dt_rank:dt_rank + d_state], dbc[..., dt_rank + d_state:]
  delta = dt @ p["dt_proj/kernel"]
  y, _ = numpy_scan(xs, delta, -np.exp(p["A_log_ES"]), B, C, p["D_E"], z, p["dt_bias_E"], True)
  return y @ p["out_proj/kernel"]


@pytest.mark.parametrize("method", ["sequential", "chunked"])
def test_forward_matches_numpy(method):
  block = mamba_block(16, d_state=4, scan_method=method, scan_chunk=4, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (2, 11, 16))
  y_ref = numpy_block(params(block), x, block.d_conv, block.dt_rank, block.d_state)
  np.testing.assert_allclose(block(x), y_ref, rtol=1e-4, atol=1e-5 * np.abs(y_ref).max())


def test_step_reproduces_full_forward():
  block = mamba_block(16, d_state=4, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (3, 9, 16))
  y_full, cache_full = block(x, return_cache=True)
  cache = block.init_cache(3)
  ys = []
  for t in range(x.shape[1]):
    y_t, cache = block.step(x[:, t], cache)
    ys.append(y_t)
  # Per-step matmuls round differently from the batched ones: float32 ulps of O(1) values.
  chex.assert_trees_all_close((jnp.stack(ys, 1), cache), (y_full, cache_full), rtol=1e-5,
                              atol=1e-6)


def test_cache_continues_a_sequence():
  block = mamba_block(16, d_state=4, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (2, 10, 16))
  y_full = block(x)
  y1, cache = block(x[:, :3], return_cache=True)
  y2 = block(x[:, 3:], cache=cache)
  np.testing.assert_allclose(jnp.concatenate([y1, y2], 1), y_full, rtol=1e-5, atol=1e-6)
  # Without the cache the continuation differs: the test above can fail.
  assert np.abs(block(x[:, 3:]) - y_full[:, 3:]).max() > 1e-3


def test_leading_axes_equal_folded_rows():
  """x_BNLD through the block is x folded to (B*N) rows through it: the population axis is just
  more rows for a shared memory."""
  block = mamba_block(16, d_state=4, scan_chunk=4, rngs=nnx.Rngs(0))
  x_BNLD = jax.random.normal(jax.random.key(1), (2, 3, 9, 16))
  y_BNLD, (conv, ssm) = block(x_BNLD, return_cache=True)
  y_MLD, (conv_m, ssm_m) = block(x_BNLD.reshape(6, 9, 16), return_cache=True)
  # The same rows through the same ops: at most a float32 ulp or so from a different layout.
  fold = lambda a: a.reshape(6, *a.shape[2:])
  chex.assert_trees_all_close(jax.tree.map(fold, (y_BNLD, conv, ssm)), (y_MLD, conv_m, ssm_m),
                              rtol=1e-6, atol=1e-6)
  assert conv.shape == (2, 3, 3, 32) and ssm.shape == (2, 3, 32, 4)


def neuron_slice(p, n, own):
  return {k: (v[n] if k.split("/")[0] in own else v) for k, v in p.items()}


@pytest.mark.parametrize("mode", ["ssm", "full"])
@pytest.mark.parametrize("method", ["sequential", "blocked"])
def test_per_neuron_parameters_match_numpy_per_neuron(mode, method):
  """Neuron n of a per-neuron block computes the NumPy block with neuron n's parameters."""
  n_neurons = 3
  block = mamba_block(16, d_state=4, scan_chunk=4, scan_method=method, n_neurons=n_neurons,
                     neuron_params=mode, rngs=nnx.Rngs(0))
  p = params(block)
  own = {"ssm": ("A_log_ES", "D_E", "dt_bias_E"),
         "full": tuple(k.split("/")[0] for k in p)}[mode]
  assert all(p[k].shape[0] == n_neurons for k in p if k.split("/")[0] in own)
  x_BNLD = jax.random.normal(jax.random.key(1), (2, n_neurons, 9, 16))
  y = np.asarray(block(x_BNLD))
  for n in range(n_neurons):
    want = numpy_block(neuron_slice(p, n, own), x_BNLD[:, n], block.d_conv, block.dt_rank,
                       block.d_state)
    np.testing.assert_allclose(y[:, n], want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
  # The neurons' parameters differ (dt bias is drawn per neuron), and so do their outputs on
  # the same input.
  same = np.asarray(block(jnp.broadcast_to(x_BNLD[:, :1], x_BNLD.shape)))
  assert np.abs(same[:, 1] - same[:, 0]).max() > 1e-3 * np.abs(same).max()


@pytest.mark.parametrize("mode,extra", [("ssm", 2 * (32 * 4 + 2 * 32)), ("full", 2 * 2_208)])
def test_per_neuron_parameter_counts(mode, extra):
  """N=3 neurons: 'ssm' adds (N-1) x (E*S + 2E); 'full' (N-1) x the whole block."""
  shared = mamba_block(16, d_state=4, rngs=nnx.Rngs(0))
  own = mamba_block(16, d_state=4, n_neurons=3, neuron_params=mode, rngs=nnx.Rngs(0))
  count = lambda b: sum(v.size for v in params(b).values())
  # D 16, E 32, R 1, S 4: in 16x64, conv 4x32 + 32, x_proj 32x9, dt 1x32 + 32, A 32x4, D 32,
  # out 32x16.
  assert count(shared) == 1024 + 160 + 288 + 64 + 128 + 32 + 512 == 2_208
  assert count(own) - count(shared) == extra


def test_per_neuron_step_reproduces_full_forward():
  block = mamba_block(16, d_state=4, n_neurons=2, neuron_params="full", rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (3, 2, 6, 16))
  y_full = block(x)
  cache, ys = block.init_cache((3, 2)), []
  for t in range(x.shape[2]):
    y_t, cache = block.step(x[:, :, t], cache)
    ys.append(y_t)
  np.testing.assert_allclose(jnp.stack(ys, 2), y_full, rtol=1e-5, atol=1e-6)


def test_bad_options():
  with pytest.raises(ValueError, match="MambaConfig.neuron_params='all' must be one of"):
    mamba_block(16, neuron_params="all", n_neurons=2, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="MambaConfig.scan_method='blockd' must be one of"):
    mamba_block(16, scan_method="blockd", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="needs n_neurons"):
    mamba_block(16, neuron_params="ssm", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="expand=0.3 x d_model=16"):
    mamba_block(16, expand=0.3, rngs=nnx.Rngs(0))


def test_neuron_axis_and_width_are_checked_with_named_errors():
  """Issue 22, problem 5: a per-neuron block read the batch as the neuron axis when B == N,
  and gave raw einsum errors otherwise."""
  block = mamba_block(16, d_state=4, n_neurons=3, neuron_params="full", rngs=nnx.Rngs(0))
  third = r"\(\.\.\., B, N, L, D\) with N = n_neurons = 3 third from last, got shape "
  with pytest.raises(ValueError, match=third + r"\(3, 7, 16\)"):
    block(jnp.ones((3, 7, 16)))  # (B, L, D) with B == N: no neuron axis.
  with pytest.raises(ValueError, match=third + r"\(2, 7, 16\)"):
    block(jnp.ones((2, 7, 16)))
  with pytest.raises(ValueError, match=r"D = d_model = 16, got shape \(2, 3, 7, 8\)"):
    block(jnp.ones((2, 3, 7, 8)))
  assert block(jnp.ones((2, 3, 7, 16))).shape == (2, 3, 7, 16)


def test_one_sequence_and_vmap_over_examples():
  """(L, D) input works (one sequence), so nnx.vmap over examples does: equal to a batch."""
  block = mamba_block(16, d_state=4, scan_chunk=4, rngs=nnx.Rngs(0))
  x_BLD = jax.random.normal(jax.random.key(1), (3, 9, 16))
  batched = block(x_BLD)
  one = block(x_BLD[1])
  np.testing.assert_allclose(one, batched[1], rtol=1e-5, atol=1e-6)
  mapped = nnx.vmap(lambda m, x: m(x), in_axes=(None, 0))(block, x_BLD)
  np.testing.assert_allclose(mapped, batched, rtol=1e-5, atol=1e-6)
  y, cache = block(x_BLD[0], return_cache=True)
  assert cache.ssm_state.shape == (block.d_inner, 4)
  y2, _ = block(x_BLD[0, :4], return_cache=True)
  y3 = block(x_BLD[0, 4:], cache=block(x_BLD[0, :4], return_cache=True)[1])
  np.testing.assert_allclose(jnp.concatenate([y2, y3]), y, rtol=1e-5, atol=1e-6)
