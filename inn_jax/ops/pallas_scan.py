"""Fused selective scan as Pallas kernels, forward and backward (semantics: inn_jax.ops.scan).

Two backends share this entry point, the per-step math and the custom_vjp plumbing:
  mosaic  Pallas' Mosaic GPU backend (pallas_scan_mosaic.py): NVIDIA compute capability >= 9.0
          (Hopper H100/H200, Blackwell). The default there.
  triton  Pallas' Triton backend (pallas_scan_triton.py): compute capability >= 8.0, the default
          on 8.x (Ampere, Ada). JAX deprecates it; kept as small and the only path before Hopper.
Elsewhere the kernels run in Pallas interpret mode (slow: tests).

Both walk the length in chunks of `chunk` steps with the state on chip; only the state at each
chunk start goes to HBM, and only when a backward pass will need it. The backward kernel walks
the chunks in reverse: it recomputes the chunk's states from the saved start state, then runs
the adjoint recurrence. dB and dC are summed over channel blocks, dA, dD and d(delta_bias) over
the batch, outside the kernels.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

F32 = jnp.float32
BACKENDS = ("mosaic", "triton")
MIN_COMPUTE_CAPABILITY = dict(mosaic=9.0, triton=8.0)
_AXES = dict(u="BLE", delta="BLE", z="BLE", B="BLS", C="BLS", A="ES", D="E", delta_bias="E",
             h0="BES")


@dataclasses.dataclass(frozen=True)
class _Cfg:
  """Static kernel configuration (hashable: a custom_vjp nondiff argument)."""
  backend: str
  length: int                  # Unpadded; the Mosaic kernels mask the steps past it.
  chunk: int
  softplus: bool
  interpret: bool
  fwd_block: tuple[int, int] | None = None   # Triton: (block_e, num_warps) of the forward.
  bwd_block: tuple[int, int] | None = None
  tile: int = 0                # Mosaic: steps per forward tile (a multiple of chunk).


def _capability() -> float | None:
  if jax.default_backend() != "gpu":
    return None
  try:
    return float(jax.devices()[0].compute_capability)
  except (AttributeError, TypeError, ValueError):  # e.g. ROCm reports "gfx90a".
    return None


def default_backend() -> str | None:
  """The backend for the default device: "mosaic" on sm_90+, "triton" on sm_80+, else None."""
  capability = _capability()
  for backend in BACKENDS:
    if capability is not None and capability >= MIN_COMPUTE_CAPABILITY[backend]:
      try:
        if backend == "triton":
          from jax.experimental.pallas import triton  # noqa: F401
        else:
          from jax.experimental.pallas import mosaic_gpu  # noqa: F401
      except ImportError:  # e.g. the Triton backend removed from a future JAX.
        continue
      return backend
  return None


def is_supported() -> bool:
  """Whether a fused kernel compiles for the default backend (an NVIDIA GPU, sm_80+)."""
  return default_backend() is not None


def _backend_module(backend):
  """The module with the backend's config, forward and backward (lazy: they import this one)."""
  if backend == "mosaic":
    from inn_jax.ops import pallas_scan_mosaic
    return pallas_scan_mosaic
  from inn_jax.ops import pallas_scan_triton
  return pallas_scan_triton


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, *,
                   h0=None, return_state=False, backend=None, interpret=None, chunk=None,
                   block_e=None, num_warps=None, tile=None):
  """The selective scan of inn_jax.ops.scan, fused; returns y_BLE or (y_BLE, h_BES).

  Args beyond scan.selective_scan's: backend ("mosaic", "triton" or None: default_backend(),
  "triton" when there is none), interpret (None: interpret mode unless the default backend is a
  GPU), chunk (steps per saved state; None: 8 for Mosaic, 16 for Triton, whose backward keeps
  chunk + 1 states in registers). Triton only: block_e and num_warps, (forward, backward) pairs of
  channels per program (rounded down to a power of two dividing E) and warps per program. Mosaic
  only: tile, steps per forward tile, a multiple of chunk. None picks them from the shapes.
  """
  from inn_jax.ops import scan  # Lazy: scan imports this module lazily too.
  if backend not in (None, *BACKENDS):
    raise ValueError(f"pallas selective_scan: backend must be None or one of {BACKENDS}, "
                     f"got {backend!r}.")
  if interpret is None:
    interpret = jax.default_backend() != "gpu"
  backend = backend or default_backend() or "triton"
  impl = _backend_module(backend)
  chunk = impl.DEFAULT_CHUNK if chunk is None else chunk
  scan._check(u, delta, A, B, C, D, z, delta_bias, h0, "pallas", chunk)
  capability = _capability()
  if not interpret and capability is not None and capability < MIN_COMPUTE_CAPABILITY[backend]:
    raise ValueError(f"pallas selective_scan: backend={backend!r} needs an NVIDIA GPU with "
                     f"compute capability >= {MIN_COMPUTE_CAPABILITY[backend]}, the default "
                     f"device has {capability}; use another backend or scan method, or "
                     f"interpret=True.")
  (batch, length, width), state = u.shape, A.shape[1]
  args = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, h0=h0)
  args = {k: v for k, v in args.items() if v is not None}
  cfg, (length_p, width_p, state_p) = impl.config(
      _Cfg(backend, length, chunk, bool(delta_softplus), bool(interpret)), args,
      block_e=block_e, num_warps=num_warps, tile=tile)
  # Padding is exact: A = B = C = 0 and u = 0 leave the padded state at zero, and padded steps
  # are masked; the slices below drop it, and their transposes feed it zero cotangents.
  sizes = dict(B=batch, L=length_p, E=width_p, S=state_p)
  args = {k: jnp.pad(v, [(0, sizes[a] - n) for a, n in zip(_AXES[k], v.shape)])
          for k, v in args.items()}
  y_BLE, h_BES = _scan(cfg, args)
  y_BLE = y_BLE[:, :length, :width]
  return (y_BLE, h_BES[:, :width, :state]) if return_state else y_BLE


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _scan(cfg, args):
  out = _backend_module(cfg.backend).forward(cfg, args, save=False)
  return out["y"], out["hT"]


def _scan_fwd(cfg, args):
  out = _backend_module(cfg.backend).forward(cfg, args, save=True)
  return (out["y"], out["hT"]), (args, out["hc"])


def _scan_bwd(cfg, res, cotangents):
  args, hc = res
  gy, ghT = cotangents
  g = _backend_module(cfg.backend).backward(cfg, args, hc, gy.astype(args["u"].dtype),
                                            ghT.astype(F32))
  # Per-program partial sums: dB, dC over channel blocks, the parameters over the batch.
  grads = dict(u=g["gu"], delta=g["gdelta"], A=g["gA"].sum(0), B=g["gB"].sum(1),
               C=g["gC"].sum(1), D=g["gD"].sum(0), z=g.get("gz"), delta_bias=g["gbias"].sum(0),
               h0=g["gh0"])
  return ({k: grads[k].astype(v.dtype) for k, v in args.items()},)


_scan.defvjp(_scan_fwd, _scan_bwd)


# Per-step math shared by the backends. Broadcasts are explicit (broadcast_in_dim): Mosaic GPU
# lowers those, not size-1 reshapes. Rows arrive as float32 via row(name), None when absent.


def bcast(x, shape, dim):
  return jax.lax.broadcast_in_dim(x, shape, (dim,))


def log1p(x):
  # Mosaic GPU has no log1p; this is exact to float32 rounding (Goldberg's correction).
  w = 1.0 + x
  return jnp.where(w == 1.0, x, jnp.log(w) * (x / (w - 1.0)))


def softplus(x):
  return jnp.maximum(x, 0.0) + log1p(jnp.exp(-jnp.abs(x)))


def sigmoid(x):
  return 1.0 / (1.0 + jnp.exp(-x))


def row_inputs(row, bias_E, use_softplus, valid=None, outputs=True):
  """One step's inputs: u, pre (delta + bias), dt, B, and C, z when outputs; valid (a 0/1
  scalar, or None) zeroes dt on padded steps, which then leave the state unchanged."""
  x = dict(u=row("u"), B=row("B"), C=row("C") if outputs else None,
           z=row("z") if outputs else None)
  x["pre"] = row("delta") if bias_E is None else row("delta") + bias_E
  x["dt"] = softplus(x["pre"]) if use_softplus else x["pre"]
  if valid is not None:
    x["dt"] = x["dt"] * valid
  return x


def advance(h_ES, A_ES, x):
  """(exp(dt A), the next state)."""
  shape = A_ES.shape
  a_ES = jnp.exp(bcast(x["dt"], shape, 0) * A_ES)
  return a_ES, a_ES * h_ES + bcast(x["dt"] * x["u"], shape, 0) * bcast(x["B"], shape, 1)


def output(h_ES, x, D_E, gate=True):
  y_E = jnp.sum(h_ES * bcast(x["C"], h_ES.shape, 1), axis=1)
  if D_E is not None:
    y_E = y_E + D_E * x["u"]
  if gate and x["z"] is not None:
    y_E = y_E * x["z"] * sigmoid(x["z"])
  return y_E


def bwd_step(h_prev_ES, A_ES, x, D_E, g0_E, carry, use_softplus, valid=None):
  """One reverse step: carry (lam, gA, gD, gbias) -> (carry, rows gu, gdelta, gB, gC[, gz])."""
  lam_ES, gA_ES, gD_E, gbias_E = carry
  shape = A_ES.shape
  a_ES, h_ES = advance(h_prev_ES, A_ES, x)
  out = {}
  if x["z"] is not None:  # y = y0 * silu(z): split the cotangent between y0 and z.
    z_E, s_E = x["z"], sigmoid(x["z"])
    out["gz"] = g0_E * output(h_ES, x, D_E, gate=False) * s_E * (1.0 + z_E * (1.0 - s_E))
    g0_E = g0_E * z_E * s_E
  lam_ES = lam_ES + bcast(g0_E, shape, 0) * bcast(x["C"], shape, 1)
  out["gC"] = jnp.sum(bcast(g0_E, shape, 0) * h_ES, axis=0)
  out["gB"] = jnp.sum(lam_ES * bcast(x["dt"] * x["u"], shape, 0), axis=0)
  lamB_E = jnp.sum(lam_ES * bcast(x["B"], shape, 1), axis=1)
  q_ES = lam_ES * a_ES * h_prev_ES
  gA_ES = gA_ES + q_ES * bcast(x["dt"], shape, 0)
  gpre_E = jnp.sum(q_ES * A_ES, axis=1) + x["u"] * lamB_E
  if use_softplus:
    gpre_E = gpre_E * sigmoid(x["pre"])
  if valid is not None:
    gpre_E = gpre_E * valid
  out["gu"] = x["dt"] * lamB_E
  if D_E is not None:
    out["gu"] = out["gu"] + g0_E * D_E
    gD_E = gD_E + g0_E * x["u"]
  out["gdelta"] = gpre_E
  return (a_ES * lam_ES, gA_ES, gD_E, gbias_E + gpre_E), out
