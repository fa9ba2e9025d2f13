"""The selective scan of Mamba v1 behind one function, with a switch for how it runs.

    dt_t = softplus(delta_t + delta_bias)          (or without softplus)
    h_t  = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t
    y_t  = <h_t, C_t> + D * u_t,   y *= silu(z)     (when z is given)

Channels-last shapes: u, delta, z (B, L, E); A (E, S); B, C (B, L, S); D, delta_bias (E,);
h0 and the final state (B, E, S). The state is carried in float32 whatever the input dtype;
y comes back in u's dtype.

Methods, all differentiable and equal up to float32 rounding:
  sequential   lax.scan over time; the reference. Memory O(B E S) forward, O(B L E S) for grads.
  associative  lax.associative_scan over the whole length; O(B L E S) memory, log-depth.
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

import jax
import jax.numpy as jnp

from inn_jax.ops import blocked_scan

METHODS = ("auto", "sequential", "associative", "chunked", "chunked_sequential", "blocked",
           "pallas")
_PER_SHARD = ("blocked", "pallas")  # Loops over rows XLA must not partition: run per device.
_HI = jax.lax.Precision.HIGHEST


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, *,
                   h0=None, return_state=False, method="auto", chunk_size=64):
  """Runs the selective scan; returns y_BLE, or (y_BLE, h_BES) with return_state=True."""
  _check(u, delta, A, B, C, D, z, delta_bias, h0, method, chunk_size)
  if method == "auto":
    method = auto_method()
  args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, h0, return_state, method,
          chunk_size)
  if method in _PER_SHARD and not jax.sharding.get_abstract_mesh().empty:
    return _per_shard(*args)
  return _local(*args)


def _local(u, delta, A, B, C, D, z, delta_bias, delta_softplus, h0, return_state, method,
           chunk_size):
  if method == "pallas":
    from inn_jax.ops import pallas_scan  # Imported lazily: Pallas is only needed on this path.
    return pallas_scan.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, h0=h0,
                                      return_state=return_state)
  f32 = jnp.float32
  dt_BLE = delta.astype(f32)
  if delta_bias is not None:
    dt_BLE = dt_BLE + delta_bias.astype(f32)
  if delta_softplus:
    dt_BLE = jax.nn.softplus(dt_BLE)
  u_BLE = u.astype(f32)
  batch, _, width = u.shape
  h_BES = (jnp.zeros((batch, width, A.shape[1]), f32) if h0 is None else h0.astype(f32))
  core = {"sequential": _sequential, "associative": _associative,
          "chunked": functools.partial(_chunked, chunk_size=chunk_size, inner=_associative),
          "chunked_sequential": functools.partial(_chunked, chunk_size=chunk_size,
                                                  inner=_sequential),
          "blocked": functools.partial(blocked_scan.scan, chunk_size=chunk_size)}[method]
  y_BLE, h_BES = core(u_BLE, dt_BLE, A.astype(f32), B.astype(f32), C.astype(f32), h_BES)
  if D is not None:
    y_BLE = y_BLE + D.astype(f32) * u_BLE
  if z is not None:
    y_BLE = y_BLE * jax.nn.silu(z.astype(f32))
  y_BLE = y_BLE.astype(u.dtype)
  return (y_BLE, h_BES) if return_state else y_BLE


def auto_method() -> str:
  """The fastest path for the default backend."""
  from inn_jax.ops import pallas_scan
  if pallas_scan.is_supported():
    return "pallas"
  return "blocked" if jax.default_backend() == "cpu" else "chunked"


def _per_shard(u, delta, A, B, C, D, z, delta_bias, delta_softplus, h0, return_state, method,
               chunk_size):
  """The scan on each device's rows: XLA cannot partition a custom call or a loop over rows."""
  from inn_jax.sharding import MESH_AXES
  rows = {"u": u, "delta": delta, "B": B, "C": C, "z": z, "h0": h0}
  rows = {k: v for k, v in rows.items() if v is not None}
  shared = {k: v for k, v in {"A": A, "D": D, "delta_bias": delta_bias}.items() if v is not None}

  def kernel(rows, shared):
    a = {**rows, **shared}
    return _local(*(a.get(k) for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")),
                  delta_softplus, a.get("h0"), return_state, method, chunk_size)

  mesh = jax.sharding.get_abstract_mesh()
  axes = tuple(a for a in MESH_AXES if a in mesh.axis_names)
  shards = 1
  for a in axes:
    shards *= mesh.shape[a]
  if shards == 1 or u.shape[0] % shards:
    return kernel(rows, shared)
  spec = jax.sharding.PartitionSpec(axes)
  out_specs = (spec, spec) if return_state else spec
  return jax.shard_map(kernel, in_specs=({k: spec for k in rows}, {k: jax.sharding.PartitionSpec()
                                                                    for k in shared}),
                       out_specs=out_specs, check_vma=False)(rows, shared)


def _sequential(u_BLE, dt_BLE, A_ES, B_BLS, C_BLS, h_BES):
  def step(h_BES, xs):
    u_BE, dt_BE, B_BS, C_BS = xs
    h_BES = jnp.exp(dt_BE[..., None] * A_ES) * h_BES + (dt_BE * u_BE)[..., None] * B_BS[:, None]
    return h_BES, jnp.einsum("bes,bs->be", h_BES, C_BS, precision=_HI)

  xs = [jnp.swapaxes(x, 0, 1) for x in (u_BLE, dt_BLE, B_BLS, C_BLS)]
  h_BES, y_LBE = jax.lax.scan(step, h_BES, xs)
  return jnp.swapaxes(y_LBE, 0, 1), h_BES


def _combine(left, right):
  a_l, b_l = left
  a_r, b_r = right
  return a_l * a_r, a_r * b_l + b_r


def _associative(u_BLE, dt_BLE, A_ES, B_BLS, C_BLS, h_BES):
  a_BLES = jnp.exp(dt_BLE[..., None] * A_ES)
  b_BLES = (dt_BLE * u_BLE)[..., None] * B_BLS[:, :, None, :]
  a_BLES, b_BLES = jax.lax.associative_scan(_combine, (a_BLES, b_BLES), axis=1)
  hs_BLES = a_BLES * h_BES[:, None] + b_BLES
  y_BLE = jnp.einsum("bles,bls->ble", hs_BLES, C_BLS, precision=_HI)
  return y_BLE, hs_BLES[:, -1]


def _chunked(u_BLE, dt_BLE, A_ES, B_BLS, C_BLS, h_BES, *, chunk_size, inner):
  batch, length, _ = u_BLE.shape
  chunk = min(chunk_size, length)
  n_chunks = -(-length // chunk)
  pad = n_chunks * chunk - length
  # Padding with dt = 0 makes exp(dt*A) = 1 and dt*B*u = 0: the state passes the pad unchanged.
  def split(x):
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    return jnp.swapaxes(x.reshape(batch, n_chunks, chunk, *x.shape[2:]), 0, 1)

  @jax.checkpoint
  def body(h_BES, xs):
    y_BTE, h_BES = inner(*xs[:2], A_ES, *xs[2:], h_BES)
    return h_BES, y_BTE

  h_BES, y_CBTE = jax.lax.scan(body, h_BES, [split(x) for x in (u_BLE, dt_BLE, B_BLS, C_BLS)])
  y_BLE = jnp.swapaxes(y_CBTE, 0, 1).reshape(batch, n_chunks * chunk, -1)[:, :length]
  return y_BLE, h_BES


def _check(u, delta, A, B, C, D, z, delta_bias, h0, method, chunk_size):
  """Shape and option checks in plain Python, so bad input fails before any tracing."""
  if method not in METHODS:
    raise ValueError(f"selective_scan: method={method!r} is not one of {METHODS}.")
  if not (isinstance(chunk_size, int) and chunk_size > 0):
    raise ValueError(f"selective_scan: chunk_size must be a positive int, got {chunk_size!r}.")
  if u.ndim != 3:
    raise ValueError(f"selective_scan: u must be (batch, length, channels), got shape {u.shape}.")
  batch, length, width = u.shape
  if A.ndim != 2 or A.shape[0] != width:
    raise ValueError(f"selective_scan: A must be (channels={width}, state), got {A.shape}.")
  state = A.shape[1]
  want = {"delta": (delta, u.shape), "B": (B, (batch, length, state)),
          "C": (C, (batch, length, state)), "D": (D, (width,)), "z": (z, u.shape),
          "delta_bias": (delta_bias, (width,)), "h0": (h0, (batch, width, state))}
  for name, (x, shape) in want.items():
    if x is not None and tuple(x.shape) != tuple(shape):
      raise ValueError(f"selective_scan: {name} must have shape {tuple(shape)} "
                       f"(from u {tuple(u.shape)} and A {tuple(A.shape)}), got {tuple(x.shape)}.")
