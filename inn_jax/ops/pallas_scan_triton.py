"""The fused selective scan's kernels for Pallas' Triton backend (entry: pallas_scan).

NVIDIA compute capability >= 8.0. Operands in pallas_scan's kernel view (rows (R, N, L, E),
parameters (N or 1, E, S)). One program per (row, block of neurons, block of channels): a block
is whole neurons when a neuron is narrower than the block (the default INN's 16-channel memories
run 4 neurons a program, read in place from (B, N, L, E)), else a slice of one neuron's channels.
It walks the length in chunks of `chunk` steps, each chunk unrolled in Python so that its loads
issue together, the (neurons, channels, S) state in registers. Every chunk is the same program:
a length that is not a multiple of the chunk has its last chunk's extra steps read the last
row again with dt = 0 (the state passes unchanged) and their cotangents zeroed, so no tail is
unrolled and the program's size does not depend on the length.

The backward recomputes a chunk's states from the saved chunk start, keeping each step's decay
exp2(dt A2) beside its state (chunk tiles of each in registers), then walks the chunk back: one
exponential per element for both passes.
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
# Default channels per program and float32 elements of one state tile per thread, for the
# forward and the backward kernel (which holds 2 x chunk + 1 such tiles). Untuned guesses:
# benchmarks/gpu_scan.py sweeps alternatives.
_BLOCK_DEFAULTS = ((64, 8), (32, 4))
_MIN_PROGRAMS = 2048  # About 16 resident programs on each of an H100/H200's 132 SMs.
_MIN_BLOCK = 16       # Channels per program below which more programs are not sought.
KINDS = dict(u="RNLE", delta="RNLE", z="RNLE", gy="RNLE", A="PES", D="PE", delta_bias="PE",
             h0="RNES", ghT="RNES", B="RNLS", C="RNLS", hc="RNJES")


def config(cfg, args, *, block=None, num_warps=None, tile=None):
  """cfg with the program blocks (neurons, channels, warps) filled in, and the padded sizes
  (the state to a power of two: Triton's tensors have power-of-two sides)."""
  rows, neurons, _, width = args["u"].shape
  state = args["A"].shape[-1]
  if tile is not None:
    raise ValueError("pallas selective_scan: tile applies to backend='mosaic' only.")
  for name, pair in (("block", block), ("num_warps", num_warps)):
    if pair is not None and not (isinstance(pair, (tuple, list)) and len(pair) == 2
                                 and all(isinstance(x, int) and x > 0 for x in pair)):
      raise ValueError(f"pallas selective_scan: {name} must be None or a (forward, backward) "
                       f"pair of positive ints, got {pair!r}.")
  padded = 1 << (state - 1).bit_length()
  blocks = []
  for i, (target, per_thread) in enumerate(_BLOCK_DEFAULTS):
    nb, eb = _block(neurons, width, block[i] if block else target,
                    rows if block is None else 0)
    warps = num_warps[i] if num_warps else min(8, max(1, nb * eb * padded // (32 * per_thread)))
    blocks.append((nb, eb, warps))
  return (dataclasses.replace(cfg, fwd_block=blocks[0], bwd_block=blocks[1]), dict(S=padded))


def _pow2_divisor(n, cap):
  """The largest power of two <= cap dividing n."""
  block = 1 << (max(1, min(cap, n)).bit_length() - 1)
  while n % block:
    block //= 2
  return block


def _block(neurons, width, target, rows):
  """(neurons, channels) per program: about `target` channels, whole neurons when a neuron is
  narrower; halved (down to _MIN_BLOCK channels) while the grid has fewer than _MIN_PROGRAMS
  programs to fill the GPU (rows=0: no halving)."""
  eb = _pow2_divisor(width, target)
  nb = _pow2_divisor(neurons, target // eb) if eb == width else 1
  programs = lambda: rows * (neurons // nb) * (width // eb)
  while rows and nb * eb > _MIN_BLOCK and programs() < _MIN_PROGRAMS:
    if nb > 1:
      nb //= 2
    else:
      eb //= 2
  return nb, eb


def forward(cfg, args, save):
  outs = dict(y=("RNLE", args["u"].dtype), hT=("RNES", F32))
  if save:
    outs["hc"] = ("RNJES", F32)
  return _call(_fwd_kernel, cfg, cfg.fwd_block, args, outs)


def backward(cfg, args, hc, gy, ghT):
  outs = dict(gu=("RNLE", args["u"].dtype), gdelta=("RNLE", args["delta"].dtype),
              gB=("RNQLS", F32), gC=("RNQLS", F32), gA=("RNES", F32), gD=("RNE", F32),
              gbias=("RNE", F32), gh0=("RNES", F32))
  if "z" in args:
    outs["gz"] = ("RNLE", args["z"].dtype)
  ins = dict(args, gy=gy, ghT=ghT, hc=hc)
  ins.pop("h0", None)  # The backward restarts from the saved chunk states instead.
  return _call(_bwd_kernel, cfg, cfg.bwd_block, ins, outs)


def _load(r, name):
  """A per-program operand, loaded once as float32 (None when the input is absent)."""
  return r[name][...].astype(F32) if name in r else None


def _steps(cfg, c):
  """The chunk's steps: (row read, 0/1 valid or None) for each; past the length the last row is
  read again, with valid 0."""
  steps = []
  for i in range(cfg.chunk):
    t = c * cfg.chunk + i
    if cfg.length % cfg.chunk:
      steps.append((jnp.minimum(t, cfg.length - 1), (t < cfg.length).astype(F32)))
    else:
      steps.append((t, None))
  return steps


def _row(r, t):
  return lambda name: r[name][:, t, :].astype(F32) if name in r else None


def _n_chunks(cfg):
  return -(-cfg.length // cfg.chunk)


def _fwd_kernel(names, cfg, *refs):
  r = dict(zip(names, refs))
  A2_ES = _load(r, "A") * ps.LOG2E
  h_ES = _load(r, "h0") if "h0" in r else jnp.zeros(A2_ES.shape, F32)
  D_E, bias_E = _load(r, "D"), _load(r, "delta_bias")

  def chunk_fn(c, h_ES):
    if "hc" in r:
      r["hc"][:, c, :, :] = h_ES
    for t, valid in _steps(cfg, c):
      x = ps.row_inputs(_row(r, t), bias_E, cfg.softplus, valid)
      h_ES = ps.advance(h_ES, A2_ES, x)[1]
      # A masked step rewrites row t = length - 1 with the value it already holds: the state,
      # and so every input of the output, are unchanged.
      r["y"][:, t, :] = ps.output(h_ES, x, D_E).astype(r["y"].dtype)
    return h_ES

  r["hT"][...] = jax.lax.fori_loop(0, _n_chunks(cfg), chunk_fn, h_ES)


def _bwd_kernel(names, cfg, *refs):
  r = dict(zip(names, refs))
  A_ES = _load(r, "A")
  A2_ES = A_ES * ps.LOG2E
  D_E, bias_E = _load(r, "D"), _load(r, "delta_bias")
  n_chunks = _n_chunks(cfg)

  def chunk_fn(j, carry):
    c = n_chunks - 1 - j
    steps = _steps(cfg, c)
    rows = [ps.row_inputs(_row(r, t), bias_E, cfg.softplus, valid) for t, valid in steps]
    hs, decays = [r["hc"][:, c, :, :]], []  # Each step's state before it, and its decay.
    for i, x in enumerate(rows):
      decays.append(ps.decay(A2_ES, x))
      if i + 1 < len(rows):
        hs.append(ps.update(decays[-1], hs[-1], x))
    # Reversed, masked steps first: their zero writes to row length - 1 are redone by its own.
    for i in reversed(range(len(rows))):
      t, valid = steps[i]
      carry, out = ps.bwd_step(hs[i], decays[i], A_ES, rows[i], D_E, _row(r, t)("gy"), carry,
                               cfg.softplus, valid)
      for name, row in out.items():
        r[name][:, t, :] = row.astype(r[name].dtype)
    return carry

  zeros_E = jnp.zeros(A_ES.shape[:-1], F32)
  carry = (_load(r, "ghT"), jnp.zeros(A_ES.shape, F32), zeros_E, zeros_E)
  lam_ES, gA_ES, gD_E, gbias_E = jax.lax.fori_loop(0, n_chunks, chunk_fn, carry)
  r["gh0"][...] = lam_ES
  r["gA"][...] = gA_ES
  r["gD"][...] = gD_E
  r["gbias"][...] = gbias_E


def _spec(kind, length, nb, eb, state, n_chunks, shared):
  """BlockSpec over the grid (row, neuron block, channel block) for each kind of operand."""
  p = (lambda n: 0) if shared else (lambda n: n)
  return {
      "RNLE": pl.BlockSpec((None, nb, length, eb), lambda r, n, e: (r, n, 0, e)),
      "RNLS": pl.BlockSpec((None, nb, length, state), lambda r, n, e: (r, n, 0, 0)),
      "PES": pl.BlockSpec((nb, eb, state), lambda r, n, e: (p(n), e, 0)),
      "PE": pl.BlockSpec((nb, eb), lambda r, n, e: (p(n), e)),
      "RNES": pl.BlockSpec((None, nb, eb, state), lambda r, n, e: (r, n, e, 0)),
      "RNE": pl.BlockSpec((None, nb, eb), lambda r, n, e: (r, n, e)),
      "RNQLS": pl.BlockSpec((None, nb, None, length, state), lambda r, n, e: (r, n, e, 0, 0)),
      "RNJES": pl.BlockSpec((None, nb, n_chunks, eb, state), lambda r, n, e: (r, n, 0, e, 0)),
  }[kind]


def _call(kernel, cfg, block, ins, outs):
  """pallas_call of kernel(names, cfg, *in_refs, *out_refs); ins/outs map names to arrays/kinds."""
  rows, neurons, length, width = ins["u"].shape
  state = ins["A"].shape[-1]
  nb, eb, num_warps = block
  n_chunks = _n_chunks(cfg)
  spec = functools.partial(_spec, length=length, nb=nb, eb=eb, state=state, n_chunks=n_chunks,
                           shared=ins["A"].shape[0] == 1)
  shape = dict(RNLE=(rows, neurons, length, width), RNES=(rows, neurons, width, state),
               RNE=(rows, neurons, width), RNQLS=(rows, neurons, width // eb, length, state),
               RNJES=(rows, neurons, n_chunks, width, state))
  params = None
  if not cfg.interpret:  # Imported here: interpret mode must not need the Triton backend.
    from jax.experimental.pallas import triton as pltriton
    params = pltriton.CompilerParams(num_warps=num_warps, num_stages=1)
  out = pl.pallas_call(
      functools.partial(kernel, (*ins, *outs), cfg),
      out_shape=[jax.ShapeDtypeStruct(shape[kind], dtype) for kind, dtype in outs.values()],
      grid=(rows, neurons // nb, width // eb),
      in_specs=[spec(KINDS[k]) for k in ins],
      out_specs=[spec(kind) for kind, _ in outs.values()],
      compiler_params=params,
      interpret=cfg.interpret,
      name=kernel.__name__.strip("_"),
  )(*ins.values())
  return dict(zip(outs, out))
