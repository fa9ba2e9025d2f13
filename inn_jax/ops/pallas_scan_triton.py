"""The fused selective scan's kernels for Pallas' Triton backend (entry: pallas_scan).

NVIDIA compute capability >= 8.0; the default backend on 8.x (Ampere, Ada). One program per
(batch row, block of channels) walks the length in chunks of `chunk` steps, each chunk unrolled
in Python so that its loads issue together, the (block_e, S) state in registers. The backward
recomputes a chunk's chunk + 1 states in registers from the saved chunk start.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from inn_jax.ops import pallas_steps as ps

F32 = jnp.float32
DEFAULT_CHUNK = 16
# Default channels per program and float32 elements of one (block_e, S) tile per thread, for
# the forward and the backward kernel (which holds chunk + 1 such tiles). Untuned guesses:
# benchmarks/gpu_scan.py sweeps alternatives.
_BLOCK_DEFAULTS = ((64, 8), (32, 4))
_MIN_PROGRAMS = 2048  # About 16 resident programs on each of an H100/H200's 132 SMs.
KINDS = dict(u="BLE", delta="BLE", z="BLE", gy="BLE", A="ES", D="E", delta_bias="E",
             h0="BES", ghT="BES", B="BLS", C="BLS", hc="BJES")


def config(cfg, args, *, block_e=None, num_warps=None, tile=None):
  """cfg with the block sizes filled in, and the padded (length, channels, state)."""
  (batch, _, width), state = args["u"].shape, args["A"].shape[1]
  if tile is not None:
    raise ValueError("pallas selective_scan: tile applies to backend='mosaic' only.")
  for name, pair in (("block_e", block_e), ("num_warps", num_warps)):
    if pair is not None and not (len(pair) == 2 and all(isinstance(x, int) and x > 0
                                                        for x in pair)):
      raise ValueError(f"pallas selective_scan: {name} must be None or a (forward, backward) "
                       f"pair of positive ints, got {pair!r}.")
  # Triton wants power-of-two block dims: pad the state to one.
  padded = 1 << (state - 1).bit_length()
  blocks = []
  for i, (target, per_thread) in enumerate(_BLOCK_DEFAULTS):
    be = _block(width, block_e[i] if block_e else target, batch if block_e is None else 0)
    warps = num_warps[i] if num_warps else min(8, max(1, be * padded // (32 * per_thread)))
    blocks.append((be, warps))
  return (dataclasses.replace(cfg, fwd_block=blocks[0], bwd_block=blocks[1]),
          (cfg.length, width, padded))


def forward(cfg, args, save):
  outs = dict(y=("BLE", args["u"].dtype), hT=("BES", F32))
  if save:
    outs["hc"] = ("BJES", F32)
  return _call(_fwd_kernel, cfg, cfg.fwd_block, args, outs)


def backward(cfg, args, hc, gy, ghT):
  outs = dict(gu=("BLE", args["u"].dtype), gdelta=("BLE", args["delta"].dtype),
              gB=("BQLS", F32), gC=("BQLS", F32), gA=("BES", F32), gD=("BE", F32),
              gbias=("BE", F32), gh0=("BES", F32))
  if "z" in args:
    outs["gz"] = ("BLE", args["z"].dtype)
  ins = dict(args, gy=gy, ghT=ghT, hc=hc)
  ins.pop("h0", None)  # The backward restarts from the saved chunk states instead.
  return _call(_bwd_kernel, cfg, cfg.bwd_block, ins, outs)


def _block(width, target, batch):
  """The largest power of two <= target dividing width, halved (down to 16) while the grid has
  fewer than _MIN_PROGRAMS programs to fill the GPU (batch=0: no halving)."""
  block = 1 << (min(target, width).bit_length() - 1)
  while width % block:
    block //= 2
  while block > 16 and batch * (width // block) < _MIN_PROGRAMS:
    block //= 2
  return block


def _load_E(r, name):
  """A per-channel vector, loaded once per program (None when the input is absent)."""
  return r[name][...].astype(F32) if name in r else None


def _row(r, t):
  return lambda name: r[name][t, :].astype(F32) if name in r else None


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
      x = ps.row_inputs(_row(r, t), bias_E, cfg.softplus)
      h_ES = ps.advance(h_ES, A_ES, x)[1]
      r["y"][t, :] = ps.output(h_ES, x, D_E).astype(r["y"].dtype)
    return h_ES

  r["hT"][...] = _walk_chunks(cfg, chunk_fn, h_ES)


def _bwd_kernel(names, cfg, *refs):
  r = dict(zip(names, refs))
  A_ES = r["A"][...].astype(F32)
  D_E, bias_E = _load_E(r, "D"), _load_E(r, "delta_bias")

  def chunk_fn(c, carry, n_steps):
    rows = [ps.row_inputs(_row(r, c * cfg.chunk + i), bias_E, cfg.softplus)
            for i in range(n_steps)]
    hs = [r["hc"][c, :, :]]  # The states before each step, recomputed in registers.
    for x in rows[:-1]:
      hs.append(ps.advance(hs[-1], A_ES, x)[1])
    for i in reversed(range(n_steps)):
      t = c * cfg.chunk + i
      carry, out = ps.bwd_step(hs[i], A_ES, rows[i], D_E, r["gy"][t, :].astype(F32), carry,
                               cfg.softplus)
      for name, row in out.items():
        r[name][t, :] = row.astype(r[name].dtype)
    return carry

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
      "BQLS": pl.BlockSpec((None, None, length, state), lambda b, e: (b, e, 0, 0)),
      "BJES": pl.BlockSpec((None, n_chunks, block_e, state), lambda b, e: (b, 0, e, 0)),
  }[kind]


def _call(kernel, cfg, block, ins, outs):
  """pallas_call of kernel(names, cfg, *in_refs, *out_refs); ins/outs map names to arrays/kinds."""
  u = ins["u"]
  batch, length, width = u.shape
  state = ins["A"].shape[1]
  block_e, num_warps = block
  n_chunks = -(-length // cfg.chunk)
  spec = lambda kind: _spec(kind, length, block_e, state, n_chunks)
  shape = dict(BLE=(batch, length, width), BES=(batch, width, state), BE=(batch, width),
               BQLS=(batch, width // block_e, length, state),
               BJES=(batch, n_chunks, width, state))
  params = None
  if not cfg.interpret:  # Imported here: interpret mode must not need the Triton backend.
    from jax.experimental.pallas import triton as pltriton
    params = pltriton.CompilerParams(num_warps=num_warps, num_stages=1)
  out = pl.pallas_call(
      functools.partial(kernel, (*ins, *outs), cfg),
      out_shape=[jax.ShapeDtypeStruct(shape[kind], dtype) for kind, dtype in outs.values()],
      grid=(batch, width // block_e),
      in_specs=[spec(KINDS[k]) for k in ins],
      out_specs=[spec(kind) for kind, _ in outs.values()],
      compiler_params=params,
      interpret=cfg.interpret,
      name=kernel.__name__.strip("_"),
  )(*ins.values())
  return dict(zip(outs, out))
