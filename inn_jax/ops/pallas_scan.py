"""Fused selective scan as Pallas kernels, forward and backward (semantics: inn_jax.ops.scan).

Two backends share this entry point and its custom_vjp plumbing (and the per-step math of
pallas_steps.py); imports run one way, scan -> pallas_scan -> backend -> pallas_steps:
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

from inn_jax.ops import scan_args

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
  """The module with the backend's config, forward and backward (imported on first use: Mosaic
  GPU's module needs a JAX built with it)."""
  if backend == "mosaic":
    from inn_jax.ops import pallas_scan_mosaic
    return pallas_scan_mosaic
  from inn_jax.ops import pallas_scan_triton
  return pallas_scan_triton


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, *,
                   h0=None, return_state=False, backend=None, interpret=None, chunk=None,
                   block_e=None, num_warps=None, tile=None):
  """The selective scan of inn_jax.ops.scan (shapes: inn_jax.ops.scan_args), fused; returns y or
  (y, final state).

  Args beyond scan.selective_scan's: backend ("mosaic", "triton" or None: default_backend(),
  "triton" when there is none), interpret (None: interpret mode unless the default backend is a
  GPU), chunk (steps per saved state; None: 8 for Mosaic, 16 for Triton, whose backward keeps
  chunk + 1 states in registers). Triton only: block_e and num_warps, (forward, backward) pairs of
  channels per program (rounded down to a power of two dividing E) and warps per program. Mosaic
  only: tile, steps per forward tile, a multiple of chunk. None picks them from the shapes.
  Per-neuron parameters (A with leading axes) run one kernel per parameter set, under jax.vmap.
  """
  if backend not in (None, *BACKENDS):
    raise ValueError(f"pallas selective_scan: backend must be None or one of {BACKENDS}, "
                     f"got {backend!r}.")
  if interpret is None:
    interpret = jax.default_backend() != "gpu"
  backend = backend or default_backend() or "triton"
  impl = _backend_module(backend)
  chunk = impl.DEFAULT_CHUNK if chunk is None else chunk
  scan_args.check(u, delta, A, B, C, D, z, delta_bias, h0, methods=("pallas",), method="pallas",
                  chunk_size=chunk)
  capability = _capability()
  if not interpret and capability is not None and capability < MIN_COMPUTE_CAPABILITY[backend]:
    raise ValueError(f"pallas selective_scan: backend={backend!r} needs an NVIDIA GPU with "
                     f"compute capability >= {MIN_COMPUTE_CAPABILITY[backend]}, the default "
                     f"device has {capability}; use another backend or scan method, or "
                     f"interpret=True.")
  opts = dict(impl=impl, cfg=_Cfg(backend, u.shape[-2], chunk, bool(delta_softplus),
                                  bool(interpret)),
              block_e=block_e, num_warps=num_warps, tile=tile)
  rows = {k: v for k, v in dict(u=u, delta=delta, B=B, C=C, z=z, h0=h0).items() if v is not None}
  params = {k: v for k, v in dict(A=A, D=D, delta_bias=delta_bias).items() if v is not None}
  fn = scan_args.vmap_param_axes(functools.partial(_rows_scan, **opts), u.ndim - 2,
                                 scan_args.param_axes(A))
  y, h = fn(rows, params)
  return (y, h) if return_state else y


def _rows_scan(rows, params, *, impl, cfg, block_e, num_warps, tile):
  """(y, final state) of rows with any leading axes and parameters shared by all of them."""
  lead = rows["u"].shape[:-2]
  flat = lambda x: x.reshape(-1, *x.shape[len(lead):])
  args = {**{k: flat(v) for k, v in rows.items()}, **params}
  (batch, length, width), state = args["u"].shape, args["A"].shape[1]
  cfg, (length_p, width_p, state_p) = impl.config(cfg, args, block_e=block_e,
                                                  num_warps=num_warps, tile=tile)
  # Padding is exact: A = B = C = 0 and u = 0 leave the padded state at zero, and padded steps
  # are masked; the slices below drop it, and their transposes feed it zero cotangents.
  sizes = dict(B=batch, L=length_p, E=width_p, S=state_p)
  args = {k: jnp.pad(v, [(0, sizes[a] - n) for a, n in zip(_AXES[k], v.shape)])
          for k, v in args.items()}
  y_BLE, h_BES = _scan(cfg, args)
  return (y_BLE[:, :length, :width].reshape(*lead, length, width),
          h_BES[:, :width, :state].reshape(*lead, width, state))


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
