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


def test_sizes_keep_a_chunk_of_states_within_the_cache_budget():
  # The study INN's scan (64 rows, each neuron's memory E=32 wide, S=8) in one block; the
  # paper INN's at batch 4 (128 rows, E=512, S=16) two rows a block.
  assert blocked_scan.sizes(64, 128, 8, 32, chunk_size=64) == (16, 64)
  assert blocked_scan.sizes(128, 128, 16, 512, chunk_size=64) == (16, 2)
  assert blocked_scan.sizes(3, 5, 4, 6, chunk_size=64) == (5, 3)  # Short and few: one block.
  assert blocked_scan.sizes(64, 128, 8, 128, chunk_size=4) == (4, 64)  # chunk_size bounds T.
  assert blocked_scan.sizes(64, 128, 8, 128, chunk_size=64) == (16, 16)
  for rows, length, state, width in [(64, 128, 8, 128), (7, 300, 16, 1024), (1, 9, 64, 4096)]:
    chunk, block = blocked_scan.sizes(rows, length, state, width, chunk_size=64)
    assert 1 <= chunk <= blocked_scan.MAX_CHUNK and 1 <= block <= rows
    assert block == 1 or chunk * block * state * width <= blocked_scan.CACHE_FLOATS


@pytest.mark.parametrize("per_row", [False, True])
def test_sized_blocks_and_chunks_match_reference(monkeypatch, per_row):
  """The default sizing with a budget small enough that both the rows and the steps are ragged
  (7 rows in blocks of 2, 11 steps in chunks of 4); A shared, or one per row (the INN's)."""
  monkeypatch.setattr(blocked_scan, "CACHE_FLOATS", 2 * 4 * 3 * 5)
  monkeypatch.setattr(blocked_scan, "MAX_CHUNK", 4)
  assert blocked_scan.sizes(7, 11, 3, 5, chunk_size=64) == (4, 2)
  inp = make_inputs(batch=7, length=11, width=5, state=3, seed=3)
  dt = jax.nn.softplus(inp["delta"])
  A = inp["A"] * (1 + 0.2 * jnp.arange(7.0))[:, None, None] if per_row else inp["A"]
  args = (inp["u"], dt, A, inp["B"], inp["C"], inp["h0"])
  y, h = blocked_scan.scan(*args, chunk_size=64)
  y_np, h_np = numpy_scan(inp["u"], dt, A, inp["B"], inp["C"], h0=inp["h0"])
  assert_trees_close((y, h), (y_np, h_np), rtol=1e-5, scaled_atol=1e-5)

  def loss(fn):
    def f(*a):
      y, h = fn(*a)
      return (y * jnp.cos(y)).sum() + (h * h).sum()
    return f

  ref = lambda u, dt, A, B, C, h0: selective_scan(u, dt, A, B, C, h0=h0, return_state=True,
                                                   method="sequential")
  g = jax.grad(loss(lambda *a: blocked_scan.scan(*a, chunk_size=64)), argnums=range(6))(*args)
  assert_trees_close(g, jax.grad(loss(ref), argnums=range(6))(*args), rtol=1e-4,
                     scaled_atol=1e-5)
