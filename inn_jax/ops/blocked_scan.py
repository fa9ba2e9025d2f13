"""The selective scan for CPUs: sequential steps over row blocks and time chunks, hand-written VJP.

Why not autodiff of a step loop: XLA's reverse pass of `lax.scan` saves per-step residuals of the
full batch and reduces the 16-wide state axis inside each SIMD vector. Here

  * the state is laid out (rows, S, E): E is the vector axis and sums over S are plain adds;
  * rows run in blocks (`lax.map`), so one block's chunk of states stays in cache;
  * the forward keeps only the state at each chunk boundary; the backward recomputes a chunk's
    states from it and runs the reverse recurrence
        g_h[t] = g_y[t] C[t] + a[t+1] g_h[t+1],   a[t] = exp(dt[t] A),
    from which g_u, g_dt, g_A, g_B, g_C and g_h0 follow in the same loop.

Its speed against the other paths inside the INN: `bash benchmarks/cpu_table.sh` (scan_methods/).
Inputs are float32 here; `scan.selective_scan` handles dtypes, D, z and softplus.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# Shapes: M rows (one block's rows inside a block), L steps, J chunks of T steps, Q row blocks;
# A is (E, S), shared by all rows, or (M, E, S), one per row; inside, (S, E) or (M, S, E).


def scan(u_MLE, dt_MLE, A, B_MLS, C_MLS, h_MES, *, chunk_size: int, block_rows: int = 16):
  """y_MLE and the final h_MES of h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t, y_t = <h_t, C_t>."""
  rows, length, _ = u_MLE.shape
  chunk = min(chunk_size, length)
  block = min(block_rows, rows)
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


def _at(x_ML_, t):
  return jax.lax.dynamic_index_in_dim(x_ML_, t, 1, keepdims=False)


def _put(buf_MT_, v_M_, i):
  return jax.lax.dynamic_update_index_in_dim(buf_MT_, v_M_, i, 1)


def _steps(h_MSE, t0, n, u, dt, A, B, C, keep: bool):
  """Steps t0 .. t0+n-1 of one row block: (final h, y_MLE, states nxMxSxE if keep)."""
  def step(i, carry):
    h_MSE, y_MLE, hs = carry
    t = t0 + i
    dt_ME, B_MS = _at(dt, t), _at(B, t)
    h_MSE = (jnp.exp(dt_ME[:, None] * A) * h_MSE
             + (dt_ME * _at(u, t))[:, None] * B_MS[..., None])
    y_MLE = _put(y_MLE, jnp.sum(h_MSE * _at(C, t)[..., None], 1), i)
    if keep:
      hs = jax.lax.dynamic_update_index_in_dim(hs, h_MSE, i, 0)
    return h_MSE, y_MLE, hs

  y_MLE = jnp.zeros((u.shape[0], n, u.shape[2]), u.dtype)
  hs = jnp.zeros((n if keep else 0, *h_MSE.shape), h_MSE.dtype)
  return jax.lax.fori_loop(0, n, step, (h_MSE, y_MLE, hs))


def _block_forward(chunk, h0_MSE, u, dt, A, B, C):
  def body(h_MSE, c):
    h_next, y_MLE, _ = _steps(h_MSE, c * chunk, chunk, u, dt, A, B, C, keep=False)
    return h_next, (y_MLE, h_MSE)

  h_MSE, (y_JMLE, h_JMSE) = jax.lax.scan(body, h0_MSE, jnp.arange(u.shape[1] // chunk))
  return _join(y_JMLE), h_JMSE, h_MSE


def _block_backward(chunk, h_JMSE, u, dt, A, B, C, gy, gh_MSE):
  rows, _, width = u.shape
  state = A.shape[-2]
  reduce_rows = (lambda g: jnp.sum(g, 0)) if A.ndim == 2 else (lambda g: g)

  def body(carry, c):
    gh_MSE, gA = carry
    h0_MSE = h_JMSE[c]
    _, _, hs_LMSE = _steps(h0_MSE, c * chunk, chunk, u, dt, A, B, C, keep=True)

    def step(j, carry):
      gh_MSE, gA, gu, gdt, gB, gC = carry
      i = chunk - 1 - j
      t = c * chunk + i
      u_ME, dt_ME, B_MS, C_MS, gy_ME = (_at(x, t) for x in (u, dt, B, C, gy))
      prev_MSE = jnp.where(i > 0, hs_LMSE[jnp.maximum(i - 1, 0)], h0_MSE)
      gh_MSE = gh_MSE + gy_ME[:, None] * C_MS[..., None]
      a_MSE = jnp.exp(dt_ME[:, None] * A)
      ga_MSE = gh_MSE * prev_MSE * a_MSE  # d/d(dt A) of exp(dt A) h_{t-1}.
      gbu_ME = jnp.sum(gh_MSE * B_MS[..., None], 1)  # d/d(dt u).
      gA = gA + reduce_rows(ga_MSE * dt_ME[:, None])
      gu = _put(gu, gbu_ME * dt_ME, i)
      gdt = _put(gdt, jnp.sum(ga_MSE * A, 1) + gbu_ME * u_ME, i)
      gB = _put(gB, jnp.sum(gh_MSE * (dt_ME * u_ME)[:, None], -1), i)
      gC = _put(gC, jnp.sum(gy_ME[:, None] * hs_LMSE[i], -1), i)
      return a_MSE * gh_MSE, gA, gu, gdt, gB, gC

    zeros = lambda d: jnp.zeros((rows, chunk, d), u.dtype)
    gh_MSE, gA, *grads = jax.lax.fori_loop(
        0, chunk, step, (gh_MSE, gA, zeros(width), zeros(width), zeros(state), zeros(state)))
    return (gh_MSE, gA), grads

  (gh_MSE, gA), grads = jax.lax.scan(body, (gh_MSE, jnp.zeros_like(A)),
                                     jnp.arange(u.shape[1] // chunk), reverse=True)
  gu, gdt, gB, gC = (_join(g) for g in grads)
  return gu, gdt, gA, gB, gC, gh_MSE


def _join(x_JMT_):
  """Chunks back into time: (J, M, T, ...) -> (M, J*T, ...)."""
  x = jnp.swapaxes(x_JMT_, 0, 1)
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
