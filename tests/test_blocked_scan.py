"""blocked_scan: ragged row blocks and chunks, forward and the hand-written VJP against the
reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inn_jax.ops import blocked_scan, selective_scan
from tests.test_scan import make_inputs, numpy_scan
from tests.trees import assert_trees_close


@pytest.mark.parametrize("batch,length,rows,chunk", [(5, 7, 2, 3), (3, 8, 4, 8), (4, 1, 3, 5)])
def test_ragged_blocks_match_reference(batch, length, rows, chunk):
  inp = make_inputs(batch=batch, length=length, width=6, state=4, seed=batch + length)
  dt = jax.nn.softplus(inp["delta"])
  args = (inp["u"], dt, inp["A"], inp["B"], inp["C"], inp["h0"])

  def loss(fn):
    def f(*a):
      y, h = fn(*a)
      w = jnp.sin(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
      cos = jnp.cos(jnp.arange(h.size, dtype=jnp.float32)).reshape(h.shape)
      return (y * w).sum() + (h * cos).sum()
    return f

  blocked = lambda *a: blocked_scan.scan(*a, chunk_size=chunk, block_rows=rows)
  ref = lambda u, dt, A, B, C, h0: selective_scan(u, dt, A, B, C, h0=h0, return_state=True,
                                                   method="sequential")
  y, h = blocked(*args)
  y_np, h_np = numpy_scan(inp["u"], dt, inp["A"], inp["B"], inp["C"], h0=inp["h0"])
  # float32 against float64 over <= 8 steps of O(1) values (test_scan's forward tolerance).
  assert_trees_close((y, h), (y_np, h_np), rtol=1e-5, scaled_atol=1e-5)
  names = ("u", "dt", "A", "B", "C", "h0")
  g = dict(zip(names, jax.grad(loss(blocked), argnums=tuple(range(6)))(*args)))
  g_ref = dict(zip(names, jax.grad(loss(ref), argnums=tuple(range(6)))(*args)))
  # The hand-written VJP sums the same float32 terms as autodiff of the sequential scan, in
  # another order (test_scan's gradient tolerance).
  assert_trees_close(g, g_ref, rtol=1e-4, scaled_atol=1e-5)


def test_jit_and_vmap_compose():
  inp = make_inputs(batch=3, length=5, width=4, state=2)
  dt = jax.nn.softplus(inp["delta"])
  f = jax.jit(lambda u: blocked_scan.scan(u, dt, inp["A"], inp["B"], inp["C"], inp["h0"],
                                          chunk_size=2, block_rows=2)[0])
  y = jax.vmap(f)(jnp.stack([inp["u"], -inp["u"]]))
  np.testing.assert_allclose(y[1], f(-inp["u"]), rtol=1e-6, atol=1e-6)
