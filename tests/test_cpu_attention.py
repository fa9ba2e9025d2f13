"""inn_jax.ops.cpu_attention: the compiled neuron-axis attention against float64 NumPy (values)
and XLA's autodiff of the same formula (gradients), masked and not; and the INN's communication
using it on one CPU device equals the XLA contractions it replaces."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from inn_jax.nn import communication
from inn_jax.ops import cpu_attention
from tests.trees import assert_trees_close


def inputs(batch=2, n=5, length=3, heads=2, dim=4, seed=0, masked=False):
  """qkv (B, N, L, 3, H, K), as the in-projection lays it out, and dropout's mask or None."""
  rng = np.random.default_rng(seed)
  qkv = rng.standard_normal((batch, n, length, 3, heads, dim)).astype(np.float32)
  keep = None
  if masked:  # Dropout's scaled mask at rate 0.3.
    keep = (rng.uniform(size=(batch, n, length, heads, n)) > 0.3).astype(np.float32) / 0.7
  return qkv, keep


def numpy_attend(qkv, keep):
  """(o_BNLHK, w_BLHNN) in float64, one position at a time."""
  qkv = np.asarray(qkv, np.float64)
  batch, n, length, _, heads, dim = qkv.shape
  o = np.zeros((batch, n, length, heads, dim))
  w = np.zeros((batch, length, heads, n, n))
  for b in range(batch):
    for l in range(length):
      for h in range(heads):
        s = qkv[b, :, l, 0, h] @ qkv[b, :, l, 1, h].T / np.sqrt(dim)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        w[b, l, h] = p
        kept = p if keep is None else p * keep[b, :, l, h]
        o[b, :, l, h] = kept @ qkv[b, :, l, 2, h]
  return o, w


def xla_attend(qkv, keep):
  """The XLA path Communication runs elsewhere (autodiff gives the reference gradients)."""
  return communication.attend(qkv[:, :, :, 0], qkv[:, :, :, 1:], keep)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("n", [1, 4, 7])
def test_values_match_numpy(masked, n):
  qkv, keep = inputs(n=n, masked=masked)
  o, w = jax.jit(cpu_attention.attend)(qkv, keep)
  o_ref, w_ref = numpy_attend(qkv, keep)
  assert_trees_close((o, w), (o_ref, w_ref), rtol=1e-5, scaled_atol=1e-6)
  assert_trees_close(jax.jit(xla_attend)(qkv, keep), (o_ref, w_ref), rtol=1e-5,
                     scaled_atol=1e-6)


@pytest.mark.parametrize("masked", [False, True])
def test_gradients_match_autodiff_through_outputs_and_weights(masked):
  """A loss of both outputs (the weights' cotangent included): the gradient of qkv, its
  queries', keys' and values' parts alike."""
  qkv, keep = inputs(masked=masked, seed=1)
  batch, n, length, _, heads, dim = qkv.shape
  rng = np.random.default_rng(2)
  go = rng.standard_normal((batch, n, length, heads, dim)).astype(np.float32)
  gw = rng.standard_normal((batch, length, heads, n, n)).astype(np.float32)

  def grads(attend):
    def loss(qkv):
      o, w = attend(qkv, keep)
      return jnp.sum(o * go) + jnp.sum(w * gw)
    return jax.jit(jax.grad(loss))(qkv)

  got, want = grads(cpu_attention.attend), grads(xla_attend)
  assert float(jnp.abs(want).max(axis=(0, 1, 2, 4, 5)).min()) > 0  # q, k, v each get some.
  assert_trees_close(got, want, rtol=1e-5, scaled_atol=1e-6)


def test_communication_on_one_cpu_device_equals_the_xla_contractions(monkeypatch):
  """Communication (dropout on, a fixed key) with the kernel and with it switched off: outputs
  and parameter gradients equal to float32 rounding."""
  comm = communication.Communication(16, communication.CommunicationConfig(n_heads=4,
                                                                           dropout=0.2),
                                     rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (2, 5, 6, 16))

  def run():
    def loss(model, x):
      return jnp.sum(jnp.sin(model(x, deterministic=False, rngs=jax.random.key(3))))
    return nnx.jit(nnx.value_and_grad(loss))(comm, x)

  assert cpu_attention.applies()
  calls = []
  real = cpu_attention.attend
  monkeypatch.setattr(cpu_attention, "attend", lambda *a: calls.append(1) or real(*a))
  with_kernel = run()
  assert calls  # The kernel ran.
  monkeypatch.setattr(cpu_attention, "available", lambda: False)
  without = run()
  assert_trees_close(with_kernel, without, rtol=1e-5, scaled_atol=1e-6)
