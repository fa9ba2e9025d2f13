"""Fused selective scan as Pallas kernels, forward and backward (semantics: inn_jax.ops.scan).

Two backends share this entry point and its custom_vjp plumbing (and the per-step math of
pallas_steps.py); imports run one way, scan -> pallas_scan -> backend -> pallas_steps:
  mosaic  Pallas' Mosaic GPU backend (pallas_scan_mosaic.py): NVIDIA compute capability >= 9.0
          (Hopper H100/H200, Blackwell). One program is one warpgroup over 128 channels of one
          row, so it runs memories at least MOSAIC_MIN_WIDTH channels wide there.
  triton  Pallas' Triton backend (pallas_scan_triton.py): compute capability >= 8.0. The only
          backend on 8.x (Ampere, Ada), and on Hopper the one for narrow memories: its programs
          fold several neurons' channels into one block (the default INN's 16-channel neurons,
          which Mosaic would pad to 128). JAX deprecates it; kept while nothing else does that.
Elsewhere the kernels run in Pallas interpret mode (slow: tests).

Both kernels see the rows as (R, N, L, E) and the parameters as (N or 1, E, S): N is the
parameters' leading axes (one set per neuron) flattened, R the rest of the leading axes, so a
population's per-neuron memories run as one call over the neurons' channels, read where they
lie: no vmap, no transpose. Both walk the length in chunks of `chunk` steps with the state on
chip; only the state at each chunk start goes to HBM, and only when a backward pass will need
it. The backward kernel walks the chunks in reverse: it recomputes the chunk's states from the
saved start state, then runs the adjoint recurrence. dB and dC are summed over channel blocks,
dA, dD and d(delta_bias) over R, outside the kernels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from inn_jax.ops import scan_args

F32 = jnp.float32
BACKENDS = ("mosaic", "triton")
MIN_COMPUTE_CAPABILITY = dict(mosaic=9.0, triton=8.0)
# Channels a row below which Hopper runs Triton: Mosaic pads a row's channels to its 128-wide
# warpgroup (E = 16 would move 8x the data). The one H200 run (benchmarks/results/gpu/
# gpu_scan.json) had the default INN's step (16 channels a neuron) at 1.28x the associative
# scan on Triton and 1.01x on Mosaic.
MOSAIC_MIN_WIDTH = 128
# The axes of each operand in the kernels' view: R rows, N neurons (the parameters' axes),
# L steps, E channels, S states; P is the parameters' neuron axis (N, or 1 when shared).
AXES = dict(u="RNLE", delta="RNLE", z="RNLE", B="RNLS", C="RNLS", h0="RNES", A="PES", D="PE",
            delta_bias="PE")


@dataclasses.dataclass(frozen=True)
class _Cfg:
  """Static kernel configuration (hashable: a custom_vjp nondiff argument)."""
  backend: str
  length: int                  # Unpadded; steps past it are masked.
  chunk: int
  softplus: bool
  interpret: bool
  fwd_block: tuple[int, int, int] | None = None   # Triton: (neurons, channels, warps).
  bwd_block: tuple[int, int, int] | None = None
  tile: int = 0                # Mosaic: steps per forward tile (a multiple of chunk).


_TRACED_FOR: list[float] = []  # traced_for's capability while its block runs (innermost last).


@contextlib.contextmanager
def traced_for(capability: float):
  """Within the block, the kernels are chosen (and lowered) as for a GPU of this compute
  capability, whatever the default device: for tracing what another device would run
  (inn_jax.roofline). Nothing inside may run the kernels, except in interpret mode."""
  _TRACED_FOR.append(float(capability))
  try:
    yield
  finally:
    _TRACED_FOR.pop()


def tracing_for_gpu() -> bool:
  """True inside a traced_for block."""
  return bool(_TRACED_FOR)


def _capability() -> float | None:
  if _TRACED_FOR:
    return _TRACED_FOR[-1]
  if jax.default_backend() != "gpu":
    return None
  try:
    return float(jax.devices()[0].compute_capability)
  except (AttributeError, TypeError, ValueError):  # e.g. ROCm reports "gfx90a".
    return None


def available_backends() -> tuple[str, ...]:
  """The backends that compile for the default device, preferred first: ("mosaic", "triton")
  on sm_90+, ("triton",) on sm_80+, () elsewhere (no NVIDIA GPU)."""
  capability, found = _capability(), []
  for backend in BACKENDS:
    if capability is not None and capability >= MIN_COMPUTE_CAPABILITY[backend]:
      try:
        if backend == "triton":
          from jax.experimental.pallas import triton  # noqa: F401
        else:
          from jax.experimental.pallas import mosaic_gpu  # noqa: F401
      except ImportError:  # e.g. the Triton backend removed from a future JAX.
        continue
      found.append(backend)
  return tuple(found)


def default_backend() -> str | None:
  """The preferred backend for the default device: "mosaic" on sm_90+, "triton" on sm_80+,
  else None."""
  return next(iter(available_backends()), None)


def is_supported() -> bool:
  """Whether a fused kernel compiles for the default backend (an NVIDIA GPU, sm_80+)."""
  return default_backend() is not None


def backend_for(width: int) -> str:
  """The backend a call with `width` channels a row runs when none is named: Mosaic where it is
  available and the rows are at least MOSAIC_MIN_WIDTH wide, else Triton where available, else
  whichever is ("triton" in interpret mode, with no GPU)."""
  available = available_backends()
  if "mosaic" in available and (width >= MOSAIC_MIN_WIDTH or "triton" not in available):
    return "mosaic"
  return "triton" if "triton" in available or not available else available[0]


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
                   block=None, num_warps=None, tile=None):
  """The selective scan of inn_jax.ops.scan (shapes: inn_jax.ops.scan_args), fused; returns y or
  (y, final state).

  Args beyond scan.selective_scan's: backend ("mosaic", "triton" or None: backend_for(E)),
  interpret (None: interpret mode unless the default backend is a GPU), chunk (steps per saved
  state; None: the backend's DEFAULT_CHUNK: Mosaic 8, Triton 16, whose backward keeps 2 x chunk
  tiles in registers). Triton only: block, the (forward, backward) channels per program (neurons
  x channels: whole neurons when a neuron is narrower, rounded down to a power of two), and
  num_warps, the (forward, backward) warps per program. Mosaic only: tile, steps per forward
  tile, a multiple of chunk. None picks them from the shapes.
  """
  if backend not in (None, *BACKENDS):
    raise ValueError(f"pallas selective_scan: backend must be None or one of {BACKENDS}, "
                     f"got {backend!r}.")
  if interpret is None:
    interpret = jax.default_backend() != "gpu"
  backend = backend or backend_for(u.shape[-1])
  impl = _backend_module(backend)
  chunk = impl.DEFAULT_CHUNK if chunk is None else chunk
  scan_args.check(u, delta, A, B, C, D, z, delta_bias, h0, methods=("pallas",), method="pallas",
                  chunk_size=chunk)
  if u.ndim == 2:
    return scan_args.one_sequence(selective_scan, u, delta, A, B, C, D, z, delta_bias,
                                  delta_softplus, h0, return_state=return_state, backend=backend,
                                  interpret=interpret, chunk=chunk, block=block,
                                  num_warps=num_warps, tile=tile)
  capability = _capability()
  if not interpret and capability is not None and capability < MIN_COMPUTE_CAPABILITY[backend]:
    raise ValueError(f"pallas selective_scan: backend={backend!r} needs an NVIDIA GPU with "
                     f"compute capability >= {MIN_COMPUTE_CAPABILITY[backend]}, the default "
                     f"device has {capability}; use another backend or scan method, or "
                     f"interpret=True.")
  given = dict(u=u, delta=delta, B=B, C=C, z=z, h0=h0, A=A, D=D, delta_bias=delta_bias)
  args = _as_kernel_view({k: v for k, v in given.items() if v is not None},
                         scan_args.param_axes(A))
  cfg = _Cfg(backend, u.shape[-2], chunk, bool(delta_softplus), bool(interpret))
  cfg, padded = impl.config(cfg, args, block=block, num_warps=num_warps, tile=tile)
  y, h = _padded_scan(cfg, args, padded)
  lead, (length, width), state = u.shape[:-2], u.shape[-2:], A.shape[-1]
  y, h = y.reshape(*lead, length, width), h.reshape(*lead, width, state)
  return (y, h) if return_state else y


def _as_kernel_view(args, n_param):
  """The operands reshaped (no copy: leading axes merged) to AXES: rows (R, N, ...), parameters
  (N or 1, ...), N the product of the parameters' leading axes."""
  u = args["u"]
  lead = u.shape[:-2]
  neurons = math.prod(lead[len(lead) - n_param:])
  rows = math.prod(lead[:len(lead) - n_param])
  view = {}
  for k, v in args.items():
    if AXES[k][0] == "R":
      view[k] = v.reshape(rows, neurons, *v.shape[len(lead):])
    else:
      view[k] = v.reshape(neurons if n_param else 1, *v.shape[n_param:])
  return view


def _padded_scan(cfg, args, padded):
  """(y (R, N, L, E), final state (R, N, E, S)) of the kernel view, padded where the backend
  asks (padded: sizes by axis letter). Padding is exact: A = B = C = 0 and u = 0 leave a padded
  channel's or state's value at zero, padded steps are masked, and the slices below drop them
  (their transposes feed them zero cotangents)."""
  sizes = {a: n for k, v in args.items() for a, n in zip(AXES[k], v.shape)}
  pad = lambda k, v: jnp.pad(v, [(0, padded.get(a, n) - n) for a, n in zip(AXES[k], v.shape)])
  if any(padded.get(a, n) != n for a, n in sizes.items()):
    args = {k: pad(k, v) for k, v in args.items()}
  y, h = _scan(cfg, args)
  if y.shape[2:] != (sizes["L"], sizes["E"]):
    y = y[:, :, :sizes["L"], :sizes["E"]]
  if h.shape[2:] != (sizes["E"], sizes["S"]):
    h = h[:, :, :sizes["E"], :sizes["S"]]
  return y, h


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _scan(cfg, args):
  out = _backend_module(cfg.backend).forward(cfg, args, save=False)
  return out["y"], out["hT"]


def _scan_fwd(cfg, args):
  out = _backend_module(cfg.backend).forward(cfg, args, save=True)
  return (out["y"], out["hT"]), (args, out["hc"])


def _sum_first(x):
  """x summed over its first axis; a reshape, not a reduction, when that axis has size 1."""
  return x.reshape(x.shape[1:]) if x.shape[0] == 1 else x.sum(0)


def _scan_bwd(cfg, res, cotangents):
  args, hc = res
  gy, ghT = cotangents
  g = _backend_module(cfg.backend).backward(cfg, args, hc, gy.astype(args["u"].dtype),
                                            ghT.astype(F32))
  # Per-program partial sums: dB, dC over channel blocks (R, N, blocks, L, S), the parameters
  # over the rows R (shared parameters have N = 1).
  params = _sum_first
  blocks = lambda x: x.reshape(*x.shape[:2], *x.shape[3:]) if x.shape[2] == 1 else x.sum(2)
  grads = dict(u=g["gu"], delta=g["gdelta"], A=params(g["gA"]), B=blocks(g["gB"]),
               C=blocks(g["gC"]), D=params(g["gD"]), z=g.get("gz"),
               delta_bias=params(g["gbias"]), h0=g["gh0"])
  return ({k: grads[k].astype(v.dtype) for k, v in args.items()},)


_scan.defvjp(_scan_fwd, _scan_bwd)
