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
  rng = np.random.default_rng(seed)
  q = rng.standard_normal((batch, n, length, heads, dim)).astype(np.float32)
  kv = rng.standard_normal((batch, n, length, 2, heads, dim)).astype(np.float32)
  keep = None
  if masked:  # Dropout's scaled mask at rate 0.3.
    keep = (rng.uniform(size=(batch, n, length, heads, n)) > 0.3).astype(np.float32) / 0.7
  return q, kv, keep


def numpy_attend(q, kv, keep):
  """(o_BnLHK, w_BLHnN) in float64, one position at a time."""
  q, kv = np.asarray(q, np.float64), np.asarray(kv, np.float64)
  batch, n, length, heads, dim = q.shape
  o = np.zeros_like(q)
  w = np.zeros((batch, length, heads, n, kv.shape[1]))
  for b in range(batch):
    for l in range(length):
      for h in range(heads):
        s = q[b, :, l, h] @ kv[b, :, l, 0, h].T / np.sqrt(dim)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        w[b, l, h] = p
        kept = p if keep is None else p * keep[b, :, l, h]
        o[b, :, l, h] = kept @ kv[b, :, l, 1, h]
  return o, w


def jnp_attend(q, kv, keep):
  """The formula in XLA ops (autodiff gives the reference gradients)."""
  logits = jnp.einsum("bnlhk,bmlhk->blhnm", q, kv[:, :, :, 0]) * q.shape[-1] ** -0.5
  w = jax.nn.softmax(logits, axis=-1)
  kept = w if keep is None else w * jnp.einsum("bnlhm->blhnm", keep)
  return jnp.einsum("blhnm,bmlhk->bnlhk", kept, kv[:, :, :, 1]), w


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("n", [1, 4, 7])
def test_values_match_numpy(masked, n):
  q, kv, keep = inputs(n=n, masked=masked)
  o, w = jax.jit(cpu_attention.attend)(q, kv, keep)
  o_ref, w_ref = numpy_attend(q, kv, keep)
  assert_trees_close((o, w), (o_ref, w_ref), rtol=1e-5, scaled_atol=1e-6)


@pytest.mark.parametrize("masked", [False, True])
def test_gradients_match_autodiff_through_outputs_and_weights(masked):
  """A loss of both outputs (the weights' cotangent included): the gradients of q and kv."""
  q, kv, keep = inputs(masked=masked, seed=1)
  rng = np.random.default_rng(2)
  go = rng.standard_normal(q.shape).astype(np.float32)
  gw = rng.standard_normal((q.shape[0], q.shape[2], q.shape[3], q.shape[1], kv.shape[1]))

  def grads(attend):
    def loss(q, kv):
      o, w = attend(q, kv, keep)
      return jnp.sum(o * go) + jnp.sum(w * gw.astype(np.float32))
    return jax.jit(jax.grad(loss, argnums=(0, 1)))(q, kv)

  got, want = grads(cpu_attention.attend), grads(jnp_attend)
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
