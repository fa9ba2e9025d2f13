"""chex.variants: the selective scan, MambaBlock and Communication on edge shapes (a length that
is not a multiple of the chunk, one step, bfloat16, extra leading axes, odd widths and
populations), each run jitted and as plain op-by-op code, against the float64 NumPy references
of test_scan, test_mamba and test_inn."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized
from flax import nnx

from inn_jax.nn import Communication, CommunicationConfig, MambaBlock
from inn_jax.ops import selective_scan
from tests.test_inn import numpy_attention
from tests.test_mamba import neuron_slice, numpy_block, params
from tests.test_scan import make_inputs, numpy_population, numpy_scan, population_inputs
from tests.trees import assert_trees_close
from tests.build import block as mamba_block

BF16 = jnp.bfloat16
# (name, inputs, chunk): a padded last chunk (7 = 2 x 3 + 1), a single step, bfloat16 inputs,
# and (B, N) leading axes with one A, D, delta_bias per neuron.
SCAN_CASES = [("ragged_chunk", dict(length=7), 3), ("one_step", dict(length=1), 4),
              ("bfloat16", dict(length=5, dtype=BF16), 2),
              ("lead_axes", dict(length=6, population=True), 4)]
# blocked (the CPU default, a hand-written VJP over row blocks) on every case; chunked on those
# where its padding and row folding differ from blocked's.
CHUNKED_CASES = ("ragged_chunk", "lead_axes")
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "h0")


def _scan_inputs(length, dtype=jnp.float32, population=False):
  if population:
    return population_inputs(batch=2, neurons=3, length=length, width=5, state=3)
  return make_inputs(batch=2, length=length, dtype=dtype)


def _numpy(inp):
  if inp["u"].ndim == 4:
    return numpy_population(inp)
  return numpy_scan(*(inp[k] for k in NAMES[:-1]), True, inp["h0"])


def _scan(method, chunk=64):
  """selective_scan(u, ..., delta_bias, h0=h0) -> (y, final state), softplus on: only arrays
  go in, so that the jitted variant traces nothing else."""
  return functools.partial(selective_scan, delta_softplus=True, return_state=True, method=method,
                           chunk_size=chunk)


def _loss(scan):
  """A scalar of y and the final state with fixed, position-dependent weights."""
  def f(inp):
    y, h = scan(*(inp[k] for k in NAMES[:-1]), h0=inp["h0"])
    y = y.astype(jnp.float32)
    return ((y * jnp.sin(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)).sum()
            + (h * jnp.cos(jnp.arange(h.size, dtype=jnp.float32)).reshape(h.shape)).sum())
  return f


@functools.cache
def _scan_case(name):
  """(inputs, chunk, NumPy (y, final state), sequential scan's gradients) of a SCAN_CASES
  case, computed once for both variants."""
  inputs, chunk = {n: (i, c) for n, i, c in SCAN_CASES}[name]
  inp = _scan_inputs(**inputs)
  return inp, chunk, _numpy(inp), jax.grad(_loss(_scan("sequential")))(inp)


class ScanVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*[(f"{method}_{name}", method, name)
                                    for method in ("chunked", "blocked")
                                    for name, _, _ in SCAN_CASES
                                    if method == "blocked" or name in CHUNKED_CASES])
  def test_matches_numpy_and_sequential_gradients(self, method, name):
    inp, chunk, (y_ref, h_ref), grads_ref = _scan_case(name)
    y, h = self.variant(_scan(method, chunk))(*(inp[k] for k in NAMES[:-1]), h0=inp["h0"])
    assert y.dtype == inp["u"].dtype and h.dtype == jnp.float32
    grads = self.variant(jax.grad(_loss(_scan(method, chunk))))(inp)
    chex.assert_trees_all_equal_shapes_and_dtypes(grads, inp)
    if y.dtype == BF16:
      # test_scan.test_bfloat16_inputs: the float32 state to ~1e-5; y rounded to bf16 once
      # (2^-9 relative), so 2^-8. Gradients of bf16 inputs are rounded to bf16 too, and a
      # float32 reordering can flip that rounding by one bf16 ulp: two, 2^-7 (test_pallas_scan).
      assert_trees_close(h, h_ref, rtol=1e-5, scaled_atol=1e-5)
      assert_trees_close(y, y_ref, rtol=2 ** -8, scaled_atol=1e-5)
      assert_trees_close(grads, grads_ref, rtol=2 ** -7, scaled_atol=2 ** -7)
    else:
      # test_scan: float32 against float64 over <= 7 steps of O(1) values (~100 ulps), and the
      # gradients' summation order (test_gradients_match_sequential).
      assert_trees_close((y, h), (y_ref, h_ref), rtol=1e-5, scaled_atol=1e-5)
      assert_trees_close(grads, grads_ref, rtol=1e-4, scaled_atol=1e-5)


# (name, d_model, d_state, input shape, chunk, neuron_params): one step; an odd width (E = 10,
# S = 3) with a padded last chunk and three leading axes; a population of 3 with its own weights.
MAMBA_CASES = [("one_step", 16, 4, (2, 1, 16), 4, "shared"),
               ("odd_width_ragged_three_leading_axes", 5, 3, (3, 2, 1, 7, 5), 4, "shared"),
               ("per_neuron_full", 8, 4, (2, 3, 5, 8), 2, "full")]


class MambaBlockVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*MAMBA_CASES)
  def test_matches_numpy(self, d_model, d_state, shape, chunk, neuron_params):
    n_neurons = shape[1] if neuron_params != "shared" else None
    block = mamba_block(d_model, d_state=d_state, scan_chunk=chunk, n_neurons=n_neurons,
                       neuron_params=neuron_params, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(block)
    x = jax.random.normal(jax.random.key(1), shape)
    y, cache = self.variant(lambda s, x: nnx.merge(graphdef, s)(x, return_cache=True))(state, x)
    lead = shape[:-2]
    assert y.shape == shape and cache.ssm_state.shape == (*lead, block.d_inner, d_state)
    p = params(block)
    ref = lambda p, x: numpy_block(p, x, block.d_conv, block.dt_rank, d_state)
    if neuron_params == "shared":  # Leading axes are just more rows: fold them.
      want = ref(p, np.asarray(x).reshape(-1, *shape[-2:])).reshape(shape)
    else:
      own = tuple(k.split("/")[0] for k in p)
      want = np.stack([ref(neuron_slice(p, n, own), x[:, n]) for n in range(shape[1])], 1)
    # test_mamba.test_forward_matches_numpy: float32 against the float64 block, four matmuls
    # and the scan deep.
    assert_trees_close(y, want, rtol=1e-4, scaled_atol=1e-5)


# (name, kind, neurons, length, d_model, heads): one neuron (softmax over one: its own value),
# an odd population with odd head size (K = 3), one step; and the static ablation.
COMM_CASES = [("one_neuron", "attention", 1, 2, 6, 2),
              ("odd_population_one_step", "attention", 3, 1, 6, 2),
              ("static_odd_population", "static", 3, 2, 6, 2)]


class CommunicationVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*COMM_CASES)
  def test_matches_numpy(self, kind, neurons, length, d_model, heads):
    comm = Communication(d_model, CommunicationConfig(kind=kind, n_heads=heads, dropout=0.5),
                         rngs=nnx.Rngs(0))
    comm.eval()
    graphdef, state = nnx.split(comm)
    x = np.asarray(jax.random.normal(jax.random.key(2), (2, neurons, length, d_model)),
                   np.float64)
    run = self.variant(lambda s, x: nnx.merge(graphdef, s)(x))
    got = run(state, jnp.asarray(x, jnp.float32))
    w_in, b_in, w_out, b_out = (np.asarray(a, np.float64) for a in (
        comm.in_proj.kernel[...], comm.in_proj.bias[...], comm.out_proj.kernel[...],
        comm.out_proj.bias[...]))
    want = np.zeros_like(x)
    for b in range(x.shape[0]):
      for t in range(length):
        if kind == "attention":
          want[b, :, t] = numpy_attention(x[b, :, t], w_in, b_in, w_out, b_out, heads)[0]
        else:  # Every neuron receives the mean message.
          want[b, :, t] = (x[b, :, t] @ w_in + b_in).mean(0) @ w_out + b_out
    # test_inn's attention tolerance: float32 against float64 through three small matmuls.
    chex.assert_trees_all_close(got, want, rtol=1e-4, atol=1e-5)
