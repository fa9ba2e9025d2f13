"""Fused selective scan as Pallas kernels, forward and backward (semantics: inn_jax.ops.scan).

One program per (batch row, block of channels) walks the length in chunks of `chunk` steps,
each chunk unrolled in Python so that its loads issue together. The state (block_e, S) stays
in registers; only the state at each chunk start goes to HBM, and only when a backward pass
will need it. The backward kernel walks the chunks in reverse: it recomputes the chunk's
states from the saved start state (again in registers), then runs the adjoint recurrence.
dB and dC are summed over channel blocks, dA, dD and d(delta_bias) over the batch, outside.

GPU path: Pallas' Triton backend, NVIDIA compute capability >= 8.0 (Ampere, Ada, Hopper incl.
H100/H200, Blackwell). Elsewhere the same kernels run in Pallas interpret mode (slow: tests).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

F32 = jnp.float32
MIN_COMPUTE_CAPABILITY = 8.0
# Default channels per program and float32 elements of one (block_e, S) tile per thread, for
# the forward and the backward kernel (which holds chunk + 1 such tiles). Untuned guesses:
# benchmarks/gpu_scan.py sweeps alternatives.
_BLOCK_DEFAULTS = ((64, 8), (32, 4))
_MIN_PROGRAMS = 2048  # About 16 resident programs on each of an H100/H200's 132 SMs.


@dataclasses.dataclass(frozen=True)
class _Cfg:
  """Static kernel configuration (hashable: a custom_vjp nondiff argument)."""
  length: int
  chunk: int
  softplus: bool
  interpret: bool
  fwd_block: tuple[int, int]   # (block_e, num_warps) of the forward kernel.
  bwd_block: tuple[int, int]


def is_supported() -> bool:
  """Whether the fused kernel compiles for the default backend (an NVIDIA GPU, sm_80+)."""
  if jax.default_backend() != "gpu":
    return False
  try:
    from jax.experimental.pallas import triton  # noqa: F401  (the backend may be removed)
    capability = float(jax.devices()[0].compute_capability)
  except (ImportError, AttributeError, TypeError, ValueError):  # e.g. ROCm reports "gfx90a".
    return False
  return capability >= MIN_COMPUTE_CAPABILITY


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, *,
                   h0=None, return_state=False, interpret=None, chunk=16, block_e=None,
                   num_warps=None):
  """The selective scan of inn_jax.ops.scan, fused; returns y_BLE or (y_BLE, h_BES).

  Args beyond scan.selective_scan's: interpret (None: interpret mode unless the default backend
  is a GPU), chunk (steps unrolled per chunk; the backward keeps chunk + 1 states in registers),
  block_e and num_warps: (forward, backward) pairs of channels per program (rounded down to a
  power of two dividing E) and Triton warps per program; None picks them from the shapes.
  """
  from inn_jax.ops import scan  # Lazy: scan imports this module lazily too.
  scan._check(u, delta, A, B, C, D, z, delta_bias, h0, "pallas", chunk)
  for name, pair in (("block_e", block_e), ("num_warps", num_warps)):
    if pair is not None and not (len(pair) == 2 and all(isinstance(x, int) and x > 0
                                                        for x in pair)):
      raise ValueError(f"pallas selective_scan: {name} must be None or a (forward, backward) "
                       f"pair of positive ints, got {pair!r}.")
  if interpret is None:
    interpret = jax.default_backend() != "gpu"
  (batch, length, width), state = u.shape, A.shape[1]
  # Triton wants power-of-two block dims: pad the state with A = B = C = 0, which stays 0.
  padded = 1 << (state - 1).bit_length()
  blocks = []
  for i, (target, per_thread) in enumerate(_BLOCK_DEFAULTS):
    be = _block(width, block_e[i] if block_e else target, batch if block_e is None else 0)
    warps = num_warps[i] if num_warps else min(8, max(1, be * padded // (32 * per_thread)))
    blocks.append((be, warps))
  cfg = _Cfg(length, chunk, bool(delta_softplus), bool(interpret), *blocks)
  pad = lambda x: x if x is None or padded == state else jnp.pad(
      x, [(0, 0)] * (x.ndim - 1) + [(0, padded - state)])
  args = dict(u=u, delta=delta, A=pad(A), B=pad(B), C=pad(C), D=D, z=z, delta_bias=delta_bias,
              h0=pad(h0))
  y_BLE, h_BES = _scan(cfg, {k: v for k, v in args.items() if v is not None})
  return (y_BLE, h_BES[..., :state]) if return_state else y_BLE


def _block(width, target, batch):
  """The largest power of two <= target dividing width, halved (down to 16) while the grid has
  fewer than _MIN_PROGRAMS programs to fill the GPU (batch=0: no halving)."""
  block = 1 << (min(target, width).bit_length() - 1)
  while width % block:
    block //= 2
  while block > 16 and batch * (width // block) < _MIN_PROGRAMS:
    block //= 2
  return block


def _softplus(x):
  return jnp.maximum(x, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


def _sigmoid(x):
  return 1.0 / (1.0 + jnp.exp(-x))


def _load_E(r, name):
  """A per-channel vector, loaded once per program (None when the input is absent)."""
  return r[name][...].astype(F32) if name in r else None


def _inputs_at(r, t, cfg, bias_E):
  """Row t of the per-step inputs, in float32: (u, pre-activation of dt, dt, B_t, C_t)."""
  u_E = r["u"][t, :].astype(F32)
  pre_E = r["delta"][t, :].astype(F32)
  if bias_E is not None:
    pre_E = pre_E + bias_E
  dt_E = _softplus(pre_E) if cfg.softplus else pre_E
  return u_E, pre_E, dt_E, r["B"][t, :].astype(F32), r["C"][t, :].astype(F32)


def _step(h_ES, A_ES, u_E, dt_E, B_S):
  a_ES = jnp.exp(dt_E[:, None] * A_ES)
  return a_ES, a_ES * h_ES + (dt_E * u_E)[:, None] * B_S[None, :]


def _walk_chunks(cfg, chunk_fn, carry, reverse=False):
  """Runs chunk_fn(c, carry, n_steps) over all chunks; the tail chunk is unrolled separately."""
  full, tail = divmod(cfg.length, cfg.chunk)
  if tail and reverse:
    carry = chunk_fn(full, carry, tail)
  body = lambda j, c: chunk_fn(full - 1 - j if reverse else j, c, cfg.chunk)
  carry = jax.lax.fori_loop(0, full, body, carry)
  if tail and not reverse:
    carry = chunk_fn(full, carry, tail)
  return carry


def _fwd_kernel(names, cfg, *refs):
  r = dict(zip(names, refs))
  A_ES = r["A"][...].astype(F32)
  h_ES = r["h0"][...].astype(F32) if "h0" in r else jnp.zeros(A_ES.shape, F32)
  D_E, bias_E = _load_E(r, "D"), _load_E(r, "delta_bias")

  def chunk_fn(c, h_ES, n_steps):
    if "hc" in r:
      r["hc"][c, :, :] = h_ES
    for i in range(n_steps):
      t = c * cfg.chunk + i
      u_E, _, dt_E, B_S, C_S = _inputs_at(r, t, cfg, bias_E)
      _, h_ES = _step(h_ES, A_ES, u_E, dt_E, B_S)
      y_E = jnp.sum(h_ES * C_S[None, :], axis=1)
      if D_E is not None:
        y_E = y_E + D_E * u_E
      if "z" in r:
        z_E = r["z"][t, :].astype(F32)
        y_E = y_E * z_E * _sigmoid(z_E)
      r["y"][t, :] = y_E.astype(r["y"].dtype)
    return h_ES

  r["hT"][...] = _walk_chunks(cfg, chunk_fn, h_ES)


def _bwd_kernel(names, cfg, *refs):
  r = dict(zip(names, refs))
  A_ES = r["A"][...].astype(F32)
  D_E, bias_E = _load_E(r, "D"), _load_E(r, "delta_bias")

  def chunk_fn(c, carry, n_steps):
    lam_ES, gA_ES, gD_E, gbias_E = carry
    rows = [_inputs_at(r, c * cfg.chunk + i, cfg, bias_E) for i in range(n_steps)]
    hs = [r["hc"][c, :, :]]  # The chunk's states, recomputed in registers.
    for u_E, _, dt_E, B_S, _ in rows:
      hs.append(_step(hs[-1], A_ES, u_E, dt_E, B_S)[1])
    for i in reversed(range(n_steps)):
      t = c * cfg.chunk + i
      u_E, pre_E, dt_E, B_S, C_S = rows[i]
      a_ES = jnp.exp(dt_E[:, None] * A_ES)
      g0_E = r["gy"][t, :].astype(F32)
      if "z" in r:  # y = y0 * silu(z): split the cotangent between y0 and z.
        z_E = r["z"][t, :].astype(F32)
        s_E = _sigmoid(z_E)
        y0_E = jnp.sum(hs[i + 1] * C_S[None, :], axis=1)
        y0_E = y0_E + D_E * u_E if D_E is not None else y0_E
        r["gz"][t, :] = (g0_E * y0_E * s_E * (1.0 + z_E * (1.0 - s_E))).astype(r["gz"].dtype)
        g0_E = g0_E * z_E * s_E
      lam_ES = lam_ES + g0_E[:, None] * C_S[None, :]
      r["gC"][t, :] = jnp.sum(g0_E[:, None] * hs[i + 1], axis=0)
      r["gB"][t, :] = jnp.sum(lam_ES * (dt_E * u_E)[:, None], axis=0)
      lamB_E = jnp.sum(lam_ES * B_S[None, :], axis=1)
      q_ES = lam_ES * a_ES * hs[i]
      gA_ES = gA_ES + q_ES * dt_E[:, None]
      gdt_E = jnp.sum(q_ES * A_ES, axis=1) + u_E * lamB_E
      gpre_E = gdt_E * _sigmoid(pre_E) if cfg.softplus else gdt_E
      gu_E = dt_E * lamB_E
      if D_E is not None:
        gu_E = gu_E + g0_E * D_E
        gD_E = gD_E + g0_E * u_E
      gbias_E = gbias_E + gpre_E
      r["gu"][t, :] = gu_E.astype(r["gu"].dtype)
      r["gdelta"][t, :] = gpre_E.astype(r["gdelta"].dtype)
      lam_ES = a_ES * lam_ES
    return lam_ES, gA_ES, gD_E, gbias_E

  zeros_E = jnp.zeros(A_ES.shape[:1], F32)
  carry = (r["ghT"][...].astype(F32), jnp.zeros(A_ES.shape, F32), zeros_E, zeros_E)
  lam_ES, gA_ES, gD_E, gbias_E = _walk_chunks(cfg, chunk_fn, carry, reverse=True)
  r["gh0"][...] = lam_ES
  r["gA"][...] = gA_ES
  r["gD"][...] = gD_E
  r["gbias"][...] = gbias_E


def _spec(kind, length, block_e, state, n_chunks=0):
  """BlockSpec over the grid (batch, channel block) for each kind of operand."""
  return {
      "BLE": pl.BlockSpec((None, length, block_e), lambda b, e: (b, 0, e)),
      "BLS": pl.BlockSpec((None, length, state), lambda b, e: (b, 0, 0)),
      "ES": pl.BlockSpec((block_e, state), lambda b, e: (e, 0)),
      "E": pl.BlockSpec((block_e,), lambda b, e: (e,)),
      "BES": pl.BlockSpec((None, block_e, state), lambda b, e: (b, e, 0)),
      "BE": pl.BlockSpec((None, block_e), lambda b, e: (b, e)),
      "BnLS": pl.BlockSpec((None, None, length, state), lambda b, e: (b, e, 0, 0)),
      "BCES": pl.BlockSpec((None, n_chunks, block_e, state), lambda b, e: (b, 0, e, 0)),
  }[kind]


_KINDS = dict(u="BLE", delta="BLE", z="BLE", gy="BLE", A="ES", D="E", delta_bias="E",
              h0="BES", ghT="BES", B="BLS", C="BLS", hc="BCES")


def _call(kernel, cfg, block, ins, outs):
  """pallas_call of kernel(names, cfg, *in_refs, *out_refs); ins/outs map names to arrays/kinds."""
  u = ins["u"]
  batch, length, width = u.shape
  state = ins["A"].shape[1]
  block_e, num_warps = block
  n_chunks = -(-length // cfg.chunk)
  spec = lambda kind: _spec(kind, length, block_e, state, n_chunks)
  shape = dict(BLE=(batch, length, width), BES=(batch, width, state), BE=(batch, width),
               BnLS=(batch, width // block_e, length, state),
               BCES=(batch, n_chunks, width, state))
  params = None
  if not cfg.interpret:  # Imported here: interpret mode must not need the Triton backend.
    from jax.experimental.pallas import triton as pltriton
    params = pltriton.CompilerParams(num_warps=num_warps, num_stages=1)
  out = pl.pallas_call(
      functools.partial(kernel, (*ins, *outs), cfg),
      out_shape=[jax.ShapeDtypeStruct(shape[kind], dtype) for kind, dtype in outs.values()],
      grid=(batch, width // block_e),
      in_specs=[spec(_KINDS[k]) for k in ins],
      out_specs=[spec(kind) for kind, _ in outs.values()],
      compiler_params=params,
      interpret=cfg.interpret,
      name=kernel.__name__.strip("_"),
  )(*ins.values())
  return dict(zip(outs, out))


def _forward(cfg, args, save):
  outs = dict(y=("BLE", args["u"].dtype), hT=("BES", F32))
  if save:
    outs["hc"] = ("BCES", F32)
  return _call(_fwd_kernel, cfg, cfg.fwd_block, args, outs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _scan(cfg, args):
  out = _forward(cfg, args, save=False)
  return out["y"], out["hT"]


def _scan_fwd(cfg, args):
  out = _forward(cfg, args, save=True)
  return (out["y"], out["hT"]), (args, out["hc"])


def _scan_bwd(cfg, res, cotangents):
  args, hc = res
  gy, ghT = cotangents
  u, delta = args["u"], args["delta"]
  outs = dict(gu=("BLE", u.dtype), gdelta=("BLE", delta.dtype), gB=("BnLS", F32),
              gC=("BnLS", F32), gA=("BES", F32), gD=("BE", F32), gbias=("BE", F32),
              gh0=("BES", F32))
  if "z" in args:
    outs["gz"] = ("BLE", args["z"].dtype)
  ins = dict(args, gy=gy.astype(u.dtype), ghT=ghT.astype(F32), hc=hc)
  ins.pop("h0", None)  # The backward restarts from the saved chunk states instead.
  g = _call(_bwd_kernel, cfg, cfg.bwd_block, ins, outs)
  grads = dict(u=g["gu"], delta=g["gdelta"], A=g["gA"].sum(0), B=g["gB"].sum(1),
               C=g["gC"].sum(1), D=g["gD"].sum(0), z=g.get("gz"), delta_bias=g["gbias"].sum(0),
               h0=g["gh0"])
  return ({k: grads[k].astype(v.dtype) for k, v in args.items()},)


_scan.defvjp(_scan_fwd, _scan_bwd)
