"""The selective scan as a compiled CPU kernel: cpu_scan.cc, built once per machine with the host's
C++ compiler against jaxlib's XLA FFI headers, called through jax.ffi, with its own VJP.

Why a kernel: XLA runs a scan on CPU as a loop of small ops, each step's arithmetic a few
fusions that stream the state through memory (inn_jax.ops.blocked_scan keeps that stream in
cache; it is still a loop of ops), and the softplus, skip and gate around it as more full-size
passes whose results the backward pass keeps. Here each row's whole recurrence runs in one pass
with its (S, E) state in L1 and the loops vectorised over E, softplus, D and the gate fused in as
mamba_ssm's selective_scan_fn fuses them; rows are split over XLA's own intra-op threads
(cpu_parallel.h: no thread is created per call). The forward keeps only the state at each
chunk's start (M, J, S, E); the backward walks the chunks in reverse, recomputing each chunk's
dt, decays, states and scan outputs from it into buffers, then runs the adjoint recurrence
(blocked_scan's docstring writes it out).

Contract: `selective` is the whole op on rows (its docstring), float32, differentiable in every
array; it composes with jit, grad and vmap (a vmapped call runs as one call over the vmapped axes
merged into its rows). It runs only on the CPU backend, on each device's own rows
(inn_jax.ops.scan runs them per shard). exp, log,
softplus and sigmoid are vectorisable polynomials (relative error about 1e-7, cpu_math.h), so
results match the XLA paths to float32 rounding, not bit for bit.

Building: the first `available()` in a process compiles cpu_scan.cc, with cpu_attention.cc (the
neuron-axis attention, inn_jax.ops.cpu_attention), into one library (a few seconds) in a cache
directory ($INN_JAX_KERNEL_CACHE, else $XDG_CACHE_HOME/inn_jax/kernels, else
~/.cache/inn_jax/kernels), named by a hash of the sources, flags, compiler, jaxlib version and
CPU, and loads it; later processes load it.
The compiler is $CXX, else c++, g++ or clang++ on PATH. Where none builds it, available() is
False and `unavailable_reason()` says why; method="auto" then runs blocked_scan.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

SOURCE = pathlib.Path(__file__).with_name("cpu_scan.cc")
# Built with it into the same library: the neuron-axis attention (inn_jax.ops.cpu_attention).
SOURCES = (SOURCE, SOURCE.with_name("cpu_attention.cc"))
# Included by the sources; part of the cache key.
HEADERS = (SOURCE.with_name("cpu_parallel.h"), SOURCE.with_name("cpu_math.h"))
# Steps per chunk: the backward's buffer of a chunk's states and decays, 2 T S E floats (128 KiB
# at the INN's S = 8, E = 128), stays in a core's L2.
MAX_CHUNK = 16
_FLAGS = ("-O3", "-std=c++17", "-fPIC", "-shared", "-fopenmp-simd", "-fno-trapping-math",
          "-fno-math-errno", "-pthread")
_NATIVE = ("-march=native",)  # Tried first; dropped where the compiler rejects it.
_TARGETS = {"forward": "inn_jax_scan_forward", "backward": "inn_jax_scan_backward",
            "attention_forward": "inn_jax_attention_forward",
            "attention_backward": "inn_jax_attention_backward"}
_SYMBOLS = {"forward": "InnScanForward", "backward": "InnScanBackward",
            "attention_forward": "InnAttentionForward",
            "attention_backward": "InnAttentionBackward"}
# The build this process registered (its key names its targets) and its library, kept loaded.
_REGISTERED: dict = {}


class Unavailable(RuntimeError):
  """The kernel cannot be built or loaded here; the message says why and what to do."""


def available() -> bool:
  """True where the kernel is built, loaded and registered with XLA (built on first call)."""
  return _load()[0]


def unavailable_reason() -> str | None:
  """None where available(), else one line: why not and the fix."""
  return _load()[1]


def require():
  """Raise Unavailable (one line: why and the fix) unless available()."""
  if not available():
    raise Unavailable(unavailable_reason())


def cache_dir() -> pathlib.Path:
  """Where built kernels live: $INN_JAX_KERNEL_CACHE, else <XDG cache or ~/.cache>/inn_jax/kernels
  (apart from the data cache, $INN_JAX_CACHE: a build is this machine's, data is not)."""
  base = os.environ.get("INN_JAX_KERNEL_CACHE")
  if base:
    return pathlib.Path(base)
  xdg = os.environ.get("XDG_CACHE_HOME")
  return (pathlib.Path(xdg) if xdg else pathlib.Path.home() / ".cache") / "inn_jax" / "kernels"


def _compiler() -> str | None:
  if os.environ.get("CXX"):
    return os.environ["CXX"]
  return next((c for c in ("c++", "g++", "clang++") if shutil.which(c)), None)


def _cpu_identity() -> str:
  """What -march=native compiles for: the CPU's model and feature flags where Linux lists them."""
  try:
    info = pathlib.Path("/proc/cpuinfo").read_text()
  except OSError:
    return platform.processor() or platform.machine()
  lines = [l for l in info.splitlines() if l.startswith(("model name", "flags", "Features"))]
  return "\n".join(sorted(set(lines)))


@functools.cache
def _load() -> tuple[bool, str | None]:
  fix = "set CXX to a C++17 compiler, or use scan_method='blocked'"
  compiler = _compiler()
  if compiler is None:
    return False, f"cpu_scan: no C++ compiler found (CXX unset; no c++, g++ or clang++ on PATH); {fix}"
  source = b"\0".join(path.read_bytes() for path in (*SOURCES, *HEADERS))
  include = jax.ffi.include_dir()
  last_error = ""
  for extra in (_NATIVE, ()):
    flags = (*_FLAGS, *extra)
    key = hashlib.sha256(b"\0".join(
        [source, " ".join(flags).encode(), compiler.encode(), jaxlib.__version__.encode(),
         platform.machine().encode(), _cpu_identity().encode()])).hexdigest()[:20]
    target = cache_dir() / f"cpu_scan-{key}.so"
    if not target.exists():
      try:
        _build(compiler, flags, include, target)
      except (OSError, subprocess.SubprocessError) as e:
        last_error = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        continue
    if _REGISTERED.get("key") == key:  # XLA keeps the first handler a name is bound to.
      return True, None
    try:
      library = ctypes.CDLL(str(target))
      for name, target_name in _TARGETS.items():
        jax.ffi.register_ffi_target(f"{target_name}_{key}",
                                    jax.ffi.pycapsule(getattr(library, _SYMBOLS[name])),
                                    platform="cpu")
    except (OSError, AttributeError, ValueError) as e:
      return False, f"cpu_scan: the built kernel {target} does not load ({e}); {fix}"
    _REGISTERED.update(key=key, library=library)
    return True, None
  return False, f"cpu_scan: {compiler} cannot build {SOURCE.name} ({last_error}); {fix}"


def target(name: str) -> str:
  """The XLA FFI target registered for handler `name` (a key of _TARGETS) in this process."""
  return f"{_TARGETS[name]}_{_REGISTERED['key']}"


def _build(compiler: str, flags, include: str, target: pathlib.Path):
  target.parent.mkdir(parents=True, exist_ok=True)
  # Built beside the target and renamed into place: processes building at once each write
  # their own file, and a reader never sees half of one.
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
  os.close(fd)
  try:
    run = subprocess.run([compiler, *flags, f"-I{include}", *map(str, SOURCES), "-o", tmp],
                         capture_output=True, text=True, timeout=300)
    if run.returncode != 0:
      raise subprocess.SubprocessError(run.stderr.strip() or f"exit {run.returncode}")
    os.replace(tmp, target)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def sizes(length: int, chunk_size: int) -> int:
  """The chunk the kernel runs with: chunk_size bounded by MAX_CHUNK and the length."""
  return max(1, min(chunk_size, MAX_CHUNK, length))


def selective(u, delta, A, B, C, D, z, delta_bias, h0, *, softplus: bool, chunk_size: int):
  """(y, final state) of the whole selective scan on rows, fused as mamba_ssm's
  selective_scan_fn: dt = softplus(delta + delta_bias) (or without softplus), the recurrence,
  y = (<h_t, C_t> + D u_t) silu(z_t) (no gate where z is None). Rows, float32: u, delta, z
  (M, L, E); A (M, E, S); B, C (M, L, S); D, delta_bias (M, E); h0 (M, E, S). Differentiable in
  every array; only the inputs and the chunk-start states are kept for the backward pass.
  Raises Unavailable where the kernel is not built."""
  require()
  rows, length, width = u.shape
  gate = z is not None
  if not gate:  # The kernel reads no z; one element stands in for it.
    z = jnp.zeros((rows, 1, 1), jnp.float32)
  y, h_MSE = _core((sizes(length, chunk_size), bool(softplus), gate), u, delta,
                   jnp.swapaxes(A, 1, 2), B, C, D, z, delta_bias, jnp.swapaxes(h0, 1, 2))
  return y, jnp.swapaxes(h_MSE, 1, 2)


def _call(name: str, outs, *args, cfg):
  # broadcast_all: a vmapped call gets every operand with the vmapped axes leading, which the
  # kernel merges into its rows (it reads rows from u's size), so one call serves the batch.
  chunk, softplus, gate = cfg
  return jax.ffi.ffi_call(target(name), outs, vmap_method="broadcast_all")(
      *args, chunk=np.int64(chunk), softplus=np.int64(softplus), gate=np.int64(gate))


def _forward(cfg, u, delta, A, B, C, D, z, bias, h0):
  rows, length, _ = u.shape
  chunks = -(-length // cfg[0])
  f32 = jnp.float32
  outs = (jax.ShapeDtypeStruct(u.shape, f32), jax.ShapeDtypeStruct(h0.shape, f32),
          jax.ShapeDtypeStruct((rows, chunks, *h0.shape[1:]), f32))
  return _call("forward", outs, u, delta, A, B, C, D, z, bias, h0, cfg=cfg)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _core(cfg, u, delta, A_MSE, B, C, D, z, bias, h0_MSE):
  y, h, _ = _forward(cfg, u, delta, A_MSE, B, C, D, z, bias, h0_MSE)
  return y, h


def _core_fwd(cfg, u, delta, A_MSE, B, C, D, z, bias, h0_MSE):
  y, h, h_MJSE = _forward(cfg, u, delta, A_MSE, B, C, D, z, bias, h0_MSE)
  return (y, h), (u, delta, A_MSE, B, C, D, z, bias, h0_MSE.shape, h_MJSE)


def _core_bwd(cfg, res, g):
  *inputs, h0_shape, h_MJSE = res
  gy, gh = g
  f32 = jnp.float32
  outs = tuple(jax.ShapeDtypeStruct(x.shape, f32) for x in inputs)
  outs += (jax.ShapeDtypeStruct(h0_shape, f32),)
  return tuple(_call("backward", outs, *inputs, h_MJSE, gy.astype(f32), gh.astype(f32),
                     cfg=cfg))


_core.defvjp(_core_fwd, _core_bwd)
