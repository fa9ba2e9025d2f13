"""The selective scan for CPUs: sequential steps over row blocks and time chunks, hand-written VJP.

Why not autodiff of a step loop: XLA's reverse pass of `lax.scan` saves per-step residuals of the
full batch and reduces the 16-wide state axis inside each SIMD vector. Here

  * the state is laid out (rows, S, E): E is the vector axis and sums over S are plain adds;
  * rows run in blocks (`lax.map`), so one block's chunk of states stays in cache;
  * the forward keeps only the state at each chunk boundary; the backward recomputes a chunk's
    states from it and runs the reverse recurrence
        g_h[t] = g_y[t] C[t] + a[t+1] g_h[t+1],   a[t] = exp(dt[t] A),
    from which g_u, g_dt, g_A, g_B, g_C and g_h0 follow in the same loop.

Measured on a 2-core CPU at the paper's Mamba width (128 rows x 128 steps x E 512 x S 16, fwd+bwd):
2.4x faster than XLA's autodiff of the same chunked loop (`python -m inn_jax.bench` times both
inside the INN). Inputs are float32 here; `scan.selective_scan` handles dtypes, D, z and softplus.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def scan(u_BLE, dt_BLE, A_ES, B_BLS, C_BLS, h_BES, *, chunk_size: int, block_rows: int = 16):
  """y_BLE and the final h_BES of h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t, y_t = <h_t, C_t>."""
  batch, length, _ = u_BLE.shape
  chunk = min(chunk_size, length)
  rows = min(block_rows, batch)
  pad_l = -length % chunk
  pad_b = -batch % rows
  # Padded steps have dt = 0 (the state passes unchanged); padded rows are all zero.
  u, dt, B, C = (jnp.pad(x, [(0, pad_b), (0, pad_l), (0, 0)])
                 for x in (u_BLE, dt_BLE, B_BLS, C_BLS))
  h0_BSE = jnp.pad(jnp.swapaxes(h_BES, 1, 2), [(0, pad_b), (0, 0), (0, 0)])
  y, h_BSE = _core(chunk, rows, u, dt, A_ES.T, B, C, h0_BSE)
  return y[:batch, :length], jnp.swapaxes(h_BSE[:batch], 1, 2)


def _at(x_RL_, t):
  return jax.lax.dynamic_index_in_dim(x_RL_, t, 1, keepdims=False)


def _put(buf_RT_, v_R_, i):
  return jax.lax.dynamic_update_index_in_dim(buf_RT_, v_R_, i, 1)


def _steps(h_RSE, t0, n, u, dt, A_SE, B, C, keep: bool):
  """Steps t0 .. t0+n-1 of one row block: (final h, y_RnE, states nxRxSxE if keep)."""
  def step(i, carry):
    h_RSE, y_RnE, hs = carry
    t = t0 + i
    dt_RE, B_RS = _at(dt, t), _at(B, t)
    h_RSE = (jnp.exp(dt_RE[:, None] * A_SE) * h_RSE
             + (dt_RE * _at(u, t))[:, None] * B_RS[..., None])
    y_RnE = _put(y_RnE, jnp.sum(h_RSE * _at(C, t)[..., None], 1), i)
    if keep:
      hs = jax.lax.dynamic_update_index_in_dim(hs, h_RSE, i, 0)
    return h_RSE, y_RnE, hs

  y_RnE = jnp.zeros((u.shape[0], n, u.shape[2]), u.dtype)
  hs = jnp.zeros((n if keep else 0, *h_RSE.shape), h_RSE.dtype)
  return jax.lax.fori_loop(0, n, step, (h_RSE, y_RnE, hs))


def _block_forward(chunk, h0_RSE, u, dt, A_SE, B, C):
  def body(h_RSE, c):
    h_next, y_RTE, _ = _steps(h_RSE, c * chunk, chunk, u, dt, A_SE, B, C, keep=False)
    return h_next, (y_RTE, h_RSE)

  h_RSE, (y_KRTE, h_KRSE) = jax.lax.scan(body, h0_RSE, jnp.arange(u.shape[1] // chunk))
  return _join(y_KRTE), h_KRSE, h_RSE


def _block_backward(chunk, h_KRSE, u, dt, A_SE, B, C, gy, gh_RSE):
  rows, _, width = u.shape
  state = A_SE.shape[0]

  def body(carry, c):
    gh_RSE, gA_SE = carry
    h0_RSE = h_KRSE[c]
    _, _, hs_TRSE = _steps(h0_RSE, c * chunk, chunk, u, dt, A_SE, B, C, keep=True)

    def step(j, carry):
      gh_RSE, gA_SE, gu, gdt, gB, gC = carry
      i = chunk - 1 - j
      t = c * chunk + i
      u_RE, dt_RE, B_RS, C_RS, gy_RE = (_at(x, t) for x in (u, dt, B, C, gy))
      prev_RSE = jnp.where(i > 0, hs_TRSE[jnp.maximum(i - 1, 0)], h0_RSE)
      gh_RSE = gh_RSE + gy_RE[:, None] * C_RS[..., None]
      a_RSE = jnp.exp(dt_RE[:, None] * A_SE)
      ga_RSE = gh_RSE * prev_RSE * a_RSE  # d/d(dt A) of exp(dt A) h_{t-1}.
      gbu_RE = jnp.sum(gh_RSE * B_RS[..., None], 1)  # d/d(dt u).
      gA_SE = gA_SE + jnp.sum(ga_RSE * dt_RE[:, None], 0)
      gu = _put(gu, gbu_RE * dt_RE, i)
      gdt = _put(gdt, jnp.sum(ga_RSE * A_SE, 1) + gbu_RE * u_RE, i)
      gB = _put(gB, jnp.sum(gh_RSE * (dt_RE * u_RE)[:, None], -1), i)
      gC = _put(gC, jnp.sum(gy_RE[:, None] * hs_TRSE[i], -1), i)
      return a_RSE * gh_RSE, gA_SE, gu, gdt, gB, gC

    zeros = lambda d: jnp.zeros((rows, chunk, d), u.dtype)
    gh_RSE, gA_SE, *grads = jax.lax.fori_loop(
        0, chunk, step, (gh_RSE, gA_SE, zeros(width), zeros(width), zeros(state), zeros(state)))
    return (gh_RSE, gA_SE), grads

  (gh_RSE, gA_SE), grads = jax.lax.scan(body, (gh_RSE, jnp.zeros_like(A_SE)),
                                        jnp.arange(u.shape[1] // chunk), reverse=True)
  gu, gdt, gB, gC = (_join(g) for g in grads)
  return gu, gdt, gA_SE, gB, gC, gh_RSE


def _join(x_KRT_):
  """Chunks back into time: (K, R, T, ...) -> (R, K*T, ...)."""
  x = jnp.swapaxes(x_KRT_, 0, 1)
  return x.reshape(x.shape[0], -1, *x.shape[3:])


def _blocks(rows, *xs):
  return [x.reshape(x.shape[0] // rows, rows, *x.shape[1:]) for x in xs]


def _unblock(x):
  return x.reshape(-1, *x.shape[2:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _core(chunk, rows, u, dt, A_SE, B, C, h0_BSE):
  y, _, h_BSE = _forward(chunk, rows, u, dt, A_SE, B, C, h0_BSE)
  return y, h_BSE


def _forward(chunk, rows, u, dt, A_SE, B, C, h0_BSE):
  fn = lambda xs: _block_forward(chunk, xs[0], xs[1], xs[2], A_SE, xs[3], xs[4])
  y, h_NKRSE, h_NRSE = jax.lax.map(fn, _blocks(rows, h0_BSE, u, dt, B, C))
  return _unblock(y), h_NKRSE, _unblock(h_NRSE)


def _core_fwd(chunk, rows, u, dt, A_SE, B, C, h0_BSE):
  y, h_NKRSE, h_BSE = _forward(chunk, rows, u, dt, A_SE, B, C, h0_BSE)
  return (y, h_BSE), (h_NKRSE, u, dt, A_SE, B, C)


def _core_bwd(chunk, rows, res, g):
  h_NKRSE, u, dt, A_SE, B, C = res
  gy, gh_BSE = g
  fn = lambda xs: _block_backward(chunk, xs[0], xs[1], xs[2], A_SE, *xs[3:])
  gu, gdt, gA_NSE, gB, gC, gh0 = jax.lax.map(
      fn, [h_NKRSE, *_blocks(rows, u, dt, B, C, gy, gh_BSE)])
  return (_unblock(gu), _unblock(gdt), gA_NSE.sum(0), _unblock(gB), _unblock(gC), _unblock(gh0))


_core.defvjp(_core_fwd, _core_bwd)
