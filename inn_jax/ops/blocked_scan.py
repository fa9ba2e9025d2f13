"""The selective scan for CPUs: time chunks in row blocks, the recurrence alone in the loop, a
hand-written VJP.

Why not autodiff of a step loop: XLA's reverse pass of `lax.scan` saves per-step residuals of the
full batch and runs every gradient's arithmetic inside the loop, one small op after another. Here

  * the state is laid out (rows, S, E): E is the vector axis and sums over S are plain adds;
  * rows run in blocks (`lax.map`), time in chunks of T steps, time-major inside a chunk;
  * the loops hold only the recurrences, h_t = a_t h_{t-1} + b_t forward and
        g_t = g_y[t] C[t] + a_{t+1} g_{t+1}      (g_t = dL/dh_t)
    backward, with a_t = exp(dt_t A) and b_t = dt_t u_t B_t computed for the whole chunk at once;
    the outputs y and every gradient (u, dt, A, B, C) come from the chunk's states and g's in a
    few chunk-wide fused ops, not T small ones;
  * the forward keeps only the state at each chunk boundary; the backward recomputes a chunk's
    states from it.

Its speed against the other paths inside the INN: `bash benchmarks/cpu_table.sh` (scan_methods/);
its block and chunk sizes against others and an earlier commit's: benchmarks/blocked_scan_sizes.py.
Inputs are float32 here; `scan.selective_scan` handles dtypes, D, z and softplus.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# Shapes: M rows (one block's rows inside a block), L steps, J chunks of T steps, Q row blocks;
# A is (E, S), shared by all rows, or (M, E, S), one per row; inside, (S, E) or (M, S, E).

# One chunk of one row block's states, T x rows x S x E float32, is what the chunk-wide ops
# stream through: sized to stay in a core's L2 cache; longer chunks than MAX_CHUNK leave too few
# rows per block at the INN's widths. Both from `python benchmarks/blocked_scan_sizes.py`.
CACHE_FLOATS = 1 << 18  # 1 MiB.
MAX_CHUNK = 16


def sizes(rows: int, length: int, state: int, width: int, chunk_size: int) -> tuple[int, int]:
  """(chunk, block_rows) the scan runs with: chunk <= chunk_size, MAX_CHUNK and the length; as
  many rows per block as keep a chunk's states within CACHE_FLOATS (at least one)."""
  chunk = max(1, min(chunk_size, MAX_CHUNK, length))
  return chunk, max(1, min(rows, CACHE_FLOATS // (chunk * state * width)))


def scan(u_MLE, dt_MLE, A, B_MLS, C_MLS, h_MES, *, chunk_size: int,
         block_rows: int | None = None):
  """y_MLE and the final h_MES of h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t, y_t = <h_t, C_t>.

  chunk_size bounds the chunk (and MAX_CHUNK); block_rows None sizes the row blocks by sizes()."""
  rows, length, width = u_MLE.shape
  chunk, block = sizes(rows, length, B_MLS.shape[-1], width, chunk_size)
  if block_rows is not None:
    chunk, block = min(chunk_size, length), min(block_rows, rows)
  pad_l = -length % chunk
  pad_m = -rows % block
  # Padded steps have dt = 0 (the state passes unchanged); padded rows are all zero.
  u, dt, B, C = (jnp.pad(x, [(0, pad_m), (0, pad_l), (0, 0)])
                 for x in (u_MLE, dt_MLE, B_MLS, C_MLS))
  h0_MSE = jnp.pad(jnp.swapaxes(h_MES, 1, 2), [(0, pad_m), (0, 0), (0, 0)])
  A = jnp.swapaxes(A, -1, -2)
  if A.ndim == 3:
    A = jnp.pad(A, [(0, pad_m), (0, 0), (0, 0)])
  y, h_MSE = _core(chunk, block, u, dt, A, B, C, h0_MSE)
  return y[:rows, :length], jnp.swapaxes(h_MSE[:rows], 1, 2)


def _decay(dt_TME, A):
  """a_TMSE = exp(dt A)."""
  return jnp.exp(dt_TME[:, :, None] * A)


def _states(h_MSE, a_TMSE, b_TMSE):
  """The chunk's states h_1 .. h_T (T, M, S, E) from h_0 = h_MSE."""
  def step(h, ab):
    h = ab[0] * h + ab[1]
    return h, h

  return jax.lax.scan(step, h_MSE, (a_TMSE, b_TMSE))[1]


def _chunk_forward(h_MSE, u, dt, A, B, C):
  """One chunk (inputs time-major: u, dt (T, M, E); B, C (T, M, S)): (states, y_TME)."""
  b_TMSE = (dt * u)[:, :, None] * B[..., None]
  hs_TMSE = _states(h_MSE, _decay(dt, A), b_TMSE)
  return hs_TMSE, jnp.sum(hs_TMSE * C[..., None], 2)


def _block_forward(chunk, h0_MSE, u, dt, A, B, C):
  def body(h_MSE, xs):
    hs_TMSE, y_TME = _chunk_forward(h_MSE, *xs[:2], A, *xs[2:])
    return hs_TMSE[-1], (y_TME, h_MSE)

  h_MSE, (y_JTME, h_JMSE) = jax.lax.scan(body, h0_MSE, _split(chunk, u, dt, B, C))
  return _join(y_JTME), h_JMSE, h_MSE


def _block_backward(chunk, h_JMSE, u, dt, A, B, C, gy, gh_MSE):
  per_row = A.ndim == 3

  def body(carry, xs):
    gh_MSE, gA = carry
    h0_MSE, u, dt, B, C, gy = xs
    a_TMSE = _decay(dt, A)
    dtu_TME = dt * u
    hs_TMSE = _states(h0_MSE, a_TMSE, dtu_TME[:, :, None] * B[..., None])

    # g_t = gy_t C_t + a_{t+1} g_{t+1}: the loop carries a_{t+1} g_{t+1} (gh at the chunk's end).
    def step(g_next, xs):
      a, c = xs
      g = g_next + c
      return a * g, g

    gh_MSE, g_TMSE = jax.lax.scan(step, gh_MSE, (a_TMSE, gy[:, :, None] * C[..., None]),
                                  reverse=True)
    prev_TMSE = jnp.concatenate([h0_MSE[None], hs_TMSE[:-1]])
    ga_TMSE = g_TMSE * prev_TMSE * a_TMSE  # d/d(dt A) of exp(dt A) h_{t-1}.
    gbu_TME = jnp.sum(g_TMSE * B[..., None], 2)  # d/d(dt u).
    gA = gA + jnp.sum(ga_TMSE * dt[:, :, None], (0,) if per_row else (0, 1))
    gu = gbu_TME * dt
    gdt = jnp.sum(ga_TMSE * A, 2) + gbu_TME * u
    gB = jnp.sum(g_TMSE * dtu_TME[:, :, None], -1)
    gC = jnp.sum(hs_TMSE * gy[:, :, None], -1)
    return (gh_MSE, gA), (gu, gdt, gB, gC)

  xs = (h_JMSE, *_split(chunk, u, dt, B, C, gy))
  (gh_MSE, gA), grads = jax.lax.scan(body, (gh_MSE, jnp.zeros_like(A)), xs, reverse=True)
  gu, gdt, gB, gC = (_join(g) for g in grads)
  return gu, gdt, gA, gB, gC, gh_MSE


def _split(chunk, *xs_ML_):
  """(M, J*T, ...) -> chunks, time-major: (J, T, M, ...)."""
  return [jnp.moveaxis(x.reshape(x.shape[0], -1, chunk, *x.shape[2:]), 0, 2) for x in xs_ML_]


def _join(x_JTM_):
  """Chunks back into time: (J, T, M, ...) -> (M, J*T, ...)."""
  x = jnp.moveaxis(x_JTM_, 2, 0)
  return x.reshape(x.shape[0], -1, *x.shape[3:])


def _blocks(block, *xs):
  return [x.reshape(x.shape[0] // block, block, *x.shape[1:]) for x in xs]


def _unblock(x):
  return x.reshape(-1, *x.shape[2:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _core(chunk, block, u, dt, A, B, C, h0_MSE):
  y, _, h_MSE = _forward(chunk, block, u, dt, A, B, C, h0_MSE)
  return y, h_MSE


def _map_blocks(fn, block, A, rows: list, blocked: tuple = ()):
  """lax.map of fn(A, *blocked, *rows) over row blocks: `rows` are split here, `blocked` come
  split already, and a per-row A is split with the rows."""
  xs = [*blocked, *_blocks(block, *rows)]
  if A.ndim == 3:
    return jax.lax.map(lambda a: fn(*a), [_blocks(block, A)[0], *xs])
  return jax.lax.map(lambda a: fn(A, *a), xs)


def _forward(chunk, block, u, dt, A, B, C, h0_MSE):
  fn = lambda A, h0, u, dt, B, C: _block_forward(chunk, h0, u, dt, A, B, C)
  y, h_QJMSE, h_QMSE = _map_blocks(fn, block, A, [h0_MSE, u, dt, B, C])
  return _unblock(y), h_QJMSE, _unblock(h_QMSE)


def _core_fwd(chunk, block, u, dt, A, B, C, h0_MSE):
  y, h_QJMSE, h_MSE = _forward(chunk, block, u, dt, A, B, C, h0_MSE)
  return (y, h_MSE), (h_QJMSE, u, dt, A, B, C)


def _core_bwd(chunk, block, res, g):
  h_QJMSE, u, dt, A, B, C = res
  gy, gh_MSE = g
  fn = lambda A, h_JMSE, u, dt, B, C, gy, gh: _block_backward(chunk, h_JMSE, u, dt, A, B, C, gy,
                                                               gh)
  gu, gdt, gA, gB, gC, gh0 = _map_blocks(fn, block, A, [u, dt, B, C, gy, gh_MSE], (h_QJMSE,))
  gA = _unblock(gA) if A.ndim == 3 else gA.sum(0)
  return (_unblock(gu), _unblock(gdt), gA, _unblock(gB), _unblock(gC), _unblock(gh0))


_core.defvjp(_core_fwd, _core_bwd)
