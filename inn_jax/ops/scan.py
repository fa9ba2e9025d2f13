"""The selective scan of Mamba v1 behind one function, with a switch for how it runs.

    dt_t = softplus(delta_t + delta_bias)          (or without softplus)
    h_t  = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t
    y_t  = <h_t, C_t> + D * u_t,   y *= silu(z)     (when z is given)

Channels-last shapes (inn_jax.ops.scan_args): u, delta, z (*lead, L, E); B, C (*lead, L, S);
h0 and the final state (*lead, E, S); A (*P, E, S), D and delta_bias (*P, E), where P is empty
(parameters shared by all rows) or the last axes of lead (one set per neuron). The leading axes
become rows of M = prod(lead) inside the op, on each device's shard. The state is carried in
float32 whatever the input dtype; y comes back in u's dtype.

Methods, all differentiable and equal up to float32 rounding:
  sequential   lax.scan over time; the reference. Memory O(M E S) forward, O(M L E S) for grads.
  associative  lax.associative_scan over the whole length; O(M L E S) memory, log-depth.
  chunked      lax.scan over chunks carrying the state, associative inside each chunk, each
               chunk rematerialised in the backward pass: memory grows with the chunk, not L.
  chunked_sequential  the same chunks, sequential inside (3-4x "chunked" on CPU).
  blocked      chunked_sequential in row blocks with a (rows, S, E) state and a hand-written VJP
               (inn_jax.ops.blocked_scan): the fastest CPU path, ~2.4x chunked_sequential.
  pallas       the fused GPU kernel (inn_jax.ops.pallas_scan).
  auto         pallas on a GPU the kernel supports, blocked on CPU, chunked elsewhere.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from inn_jax import sharding
from inn_jax.ops import blocked_scan, pallas_scan, scan_args

METHODS = ("auto", "sequential", "associative", "chunked", "chunked_sequential", "blocked",
           "pallas")
_PER_SHARD = ("blocked", "pallas")  # Loops over rows XLA must not partition: run per device.
_HI = jax.lax.Precision.HIGHEST


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, *,
                   h0=None, return_state=False, method="auto", chunk_size=64):
  """Runs the selective scan; returns y, or (y, final state) with return_state=True."""
  scan_args.check(u, delta, A, B, C, D, z, delta_bias, h0, methods=METHODS, method=method,
                  chunk_size=chunk_size)
  if method == "auto":
    method = auto_method()
  rows = dict(u=u, delta=delta, B=B, C=C, z=z, h0=h0)
  params = dict(A=A, D=D, delta_bias=delta_bias)
  fn = functools.partial(_local, softplus=delta_softplus, method=method, chunk_size=chunk_size)
  if method in _PER_SHARD:
    fn = _per_shard(fn, u.ndim - 2, scan_args.param_axes(A), rows)
  y, h = fn({k: v for k, v in rows.items() if v is not None},
            {k: v for k, v in params.items() if v is not None})
  return (y, h) if return_state else y


def auto_method() -> str:
  """The fastest path for the default backend."""
  if pallas_scan.is_supported():
    return "pallas"
  return "blocked" if jax.default_backend() == "cpu" else "chunked"


def _local(rows, params, *, softplus, method, chunk_size):
  """(y, final state) on this device's rows."""
  if method == "pallas":
    return pallas_scan.selective_scan(**rows, **params, delta_softplus=softplus,
                                      return_state=True)
  f32 = jnp.float32
  u = rows["u"]
  lead, (length, width) = u.shape[:-2], u.shape[-2:]
  per_step = lambda p: p[..., None, :].astype(f32)  # (*P, E) -> (*P, 1, E): broadcast over L.
  dt = rows["delta"].astype(f32)
  if "delta_bias" in params:
    dt = dt + per_step(params["delta_bias"])
  if softplus:
    dt = jax.nn.softplus(dt)
  u32 = u.astype(f32)
  A = params["A"].astype(f32)
  n_rows = math.prod(lead)
  to_rows = lambda x: x.reshape(n_rows, *x.shape[len(lead):])
  if A.ndim > 2:  # One A per row: the parameters broadcast over the rest of the lead axes.
    A = to_rows(jnp.broadcast_to(A, (*lead, *A.shape[-2:])))
  h0 = rows.get("h0")
  h0 = jnp.zeros((n_rows, width, A.shape[-1]), f32) if h0 is None else to_rows(h0.astype(f32))
  core = {"sequential": _sequential, "associative": _associative,
          "chunked": functools.partial(_chunked, chunk_size=chunk_size, inner=_associative),
          "chunked_sequential": functools.partial(_chunked, chunk_size=chunk_size,
                                                  inner=_sequential),
          "blocked": functools.partial(blocked_scan.scan, chunk_size=chunk_size)}[method]
  y_MLE, h_MES = core(to_rows(u32), to_rows(dt), A, to_rows(rows["B"].astype(f32)),
                      to_rows(rows["C"].astype(f32)), h0)
  y = y_MLE.reshape(*lead, length, width)
  if "D" in params:
    y = y + per_step(params["D"]) * u32
  if "z" in rows:
    y = y * jax.nn.silu(rows["z"].astype(f32))
  return y.astype(u.dtype), h_MES.reshape(*lead, *h_MES.shape[1:])


def _per_shard(fn, n_lead: int, n_param: int, rows: dict):
  """fn on each device's rows (XLA cannot partition a custom call or a loop over rows): the lead
  axes split as the population's (inn_jax.sharding), per-neuron parameters with their neurons,
  shared ones replicated. Runs unsplit where no split divides."""
  axes = sharding.population_axes(rows["u"].shape[:n_lead])
  if not axes:
    return fn
  row_spec = jax.sharding.PartitionSpec(*axes)
  param_spec = jax.sharding.PartitionSpec(*axes[n_lead - n_param:])
  return jax.shard_map(fn, in_specs=(row_spec, param_spec), out_specs=(row_spec, row_spec),
                       check_vma=False)


# The cores run on rows: u, dt (M, L, E); B, C (M, L, S); h (M, E, S); A (E, S) shared by the
# rows or (M, E, S), one per row.


def _sequential(u_MLE, dt_MLE, A, B_MLS, C_MLS, h_MES):
  def step(h_MES, xs):
    u_ME, dt_ME, B_MS, C_MS = xs
    h_MES = jnp.exp(dt_ME[..., None] * A) * h_MES + (dt_ME * u_ME)[..., None] * B_MS[:, None]
    return h_MES, jnp.einsum("mes,ms->me", h_MES, C_MS, precision=_HI)

  xs = [jnp.swapaxes(x, 0, 1) for x in (u_MLE, dt_MLE, B_MLS, C_MLS)]
  h_MES, y_LME = jax.lax.scan(step, h_MES, xs)
  return jnp.swapaxes(y_LME, 0, 1), h_MES


def _combine(left, right):
  a_l, b_l = left
  a_r, b_r = right
  return a_l * a_r, a_r * b_l + b_r


def _associative(u_MLE, dt_MLE, A, B_MLS, C_MLS, h_MES):
  a_MLES = jnp.exp(dt_MLE[..., None] * (A if A.ndim == 2 else A[:, None]))
  b_MLES = (dt_MLE * u_MLE)[..., None] * B_MLS[:, :, None, :]
  a_MLES, b_MLES = jax.lax.associative_scan(_combine, (a_MLES, b_MLES), axis=1)
  hs_MLES = a_MLES * h_MES[:, None] + b_MLES
  y_MLE = jnp.einsum("mles,mls->mle", hs_MLES, C_MLS, precision=_HI)
  return y_MLE, hs_MLES[:, -1]


def _chunked(u_MLE, dt_MLE, A, B_MLS, C_MLS, h_MES, *, chunk_size, inner):
  rows, length, _ = u_MLE.shape
  chunk = min(chunk_size, length)
  n_chunks = -(-length // chunk)
  pad = n_chunks * chunk - length
  # Padding with dt = 0 makes exp(dt*A) = 1 and dt*B*u = 0: the state passes the pad unchanged.
  def split(x):
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    return jnp.swapaxes(x.reshape(rows, n_chunks, chunk, *x.shape[2:]), 0, 1)

  @jax.checkpoint
  def body(h_MES, xs):
    y_MTE, h_MES = inner(*xs[:2], A, *xs[2:], h_MES)
    return h_MES, y_MTE

  h_MES, y_JMTE = jax.lax.scan(body, h_MES, [split(x) for x in (u_MLE, dt_MLE, B_MLS, C_MLS)])
  y_MLE = jnp.swapaxes(y_JMTE, 0, 1).reshape(rows, n_chunks * chunk, -1)[:, :length]
  return y_MLE, h_MES
