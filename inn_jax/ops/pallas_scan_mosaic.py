"""The fused selective scan's kernels for Pallas' Mosaic GPU backend (entry: pallas_scan).

NVIDIA compute capability >= 9.0 (Hopper, Blackwell): TMA copies tracked by mbarriers. Operands
in pallas_scan's kernel view (rows (R, N, L, E), parameters (N or 1, E, S)), read in place. One
program (CUDA block) per (row, neuron, 128 channels) is one warpgroup; the (128, S) float32 state
lives in registers in the WGMMA layout (each thread holds a few rows and columns), per-channel
rows in its row-reduced layout, per-state rows (B_t, C_t) in its column-reduced one. The
length streams through SMEM in tiles, double-buffered: the copy of tile i + 2 is issued as soon
as tile i is consumed, and each output tile is copied back while the next one computes.

Forward: tiles of `tile` steps; the state at every chunk start goes to HBM when a backward will
need it. Backward: tiles of one chunk in reverse; the chunk's states are recomputed from the
saved one into SMEM, then the adjoint recurrence walks them back, recomputing each step's decay
(keeping them would take a second (chunk, 128, S) float32 SMEM buffer, 64 KB at chunk 8, and a
store and a load an element where the exp costs one SFU result: which is faster is for a GPU to
measure). Channels are padded to 128, the state to a multiple of 8 (WGMMA's tile) and the length
to a multiple of the tile; steps past the true length are masked (dt = 0 keeps the state).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from inn_jax.ops import pallas_steps as ps

F32 = jnp.float32
DEFAULT_CHUNK = 8
BLOCK_E = 128  # One warpgroup.
_MAX_TILE = 64
# Shared memory per program: the forward tile is the longest that keeps two programs on an
# H100/H200 SM (228 KB); the backward must fit one (227 KB usable).
_FWD_SMEM = 110 * 1024
_MAX_SMEM = 220 * 1024
_TILE, _ROW, _COL = (plgpu.Layout.WGMMA, plgpu.Layout.WGMMA.reduce(1),
                     plgpu.Layout.WGMMA.reduce(0))
KINDS = dict(u="RNLE", delta="RNLE", z="RNLE", gy="RNLE", gu="RNLE", gdelta="RNLE", gz="RNLE",
             y="RNLE", B="RNLS", C="RNLS", gB="RNQLS", gC="RNQLS", hc="RNJES", A="PES", D="PE",
             delta_bias="PE", h0="RNES", ghT="RNES", hT="RNES", gA="RNES", gh0="RNES", gD="RNE",
             gbias="RNE")
# Walked along the length; the rest once per program.
_STREAMED = ("RNLE", "RNLS", "RNQLS", "RNJES")


def config(cfg, args, *, block=None, num_warps=None, tile=None):
  """cfg with the forward tile filled in, and the padded sizes: length (to the tile), channels
  (to 128), state (to a multiple of 8)."""
  if block is not None or num_warps is not None:
    raise ValueError("pallas selective_scan: block and num_warps apply to backend='triton' "
                     "only; Mosaic GPU programs are 128 channels wide.")
  length, width = args["u"].shape[2:]
  state = args["A"].shape[-1]
  state_p, chunk = -(-state // 8) * 8, cfg.chunk
  itemsize = {k: jnp.dtype(v.dtype).itemsize for k, v in args.items()}
  streamed = [k for k in ("u", "delta", "z") if k in args]
  fwd_bytes = lambda t: 2 * (t * BLOCK_E * sum(itemsize[k] for k in streamed + ["u"])
                             + t * state_p * (itemsize["B"] + itemsize["C"])
                             + t // chunk * BLOCK_E * state_p * 4) + 4 * BLOCK_E * state_p * 4
  if tile is None:
    tile = chunk
    while (tile + chunk <= min(_MAX_TILE, -(-length // chunk) * chunk)
           and fwd_bytes(tile + chunk) <= _FWD_SMEM):
      tile += chunk
  elif not (isinstance(tile, int) and tile > 0 and tile % chunk == 0):
    raise ValueError(f"pallas selective_scan: tile must be a positive multiple of chunk={chunk}, "
                     f"got {tile!r}.")
  bwd_bytes = (chunk * BLOCK_E * state_p * 4  # The recomputed states.
               + 2 * chunk * BLOCK_E * (2 * sum(itemsize[k] for k in streamed) + itemsize["u"])
               + 2 * (chunk * state_p * (itemsize["B"] + itemsize["C"] + 8))
               + 6 * BLOCK_E * state_p * 4)
  if max(fwd_bytes(tile), bwd_bytes) > _MAX_SMEM:
    raise ValueError(f"pallas selective_scan: chunk={chunk}, tile={tile} with state {state} "
                     f"need {max(fwd_bytes(tile), bwd_bytes) // 1024} KB of shared memory per "
                     f"program, over {_MAX_SMEM // 1024} KB; lower chunk or tile.")
  return (dataclasses.replace(cfg, tile=tile),
          dict(L=-(-length // tile) * tile, E=-(-width // BLOCK_E) * BLOCK_E, S=state_p))


def forward(cfg, args, save):
  outs = dict(y=args["u"].dtype, hT=F32)
  if save:
    outs["hc"] = F32
  rows = dict(RNLE=cfg.tile, RNLS=cfg.tile, RNJES=cfg.tile // cfg.chunk)
  padded = args["u"].shape[2]

  def init(c):
    return c["h0"] if "h0" in c else _zeros(c["A"].shape, _TILE)

  def tile_fn(i, src, dst, c, h_ES):
    def chunk_fn(k, h_ES):
      if "hc" in dst:
        dst["hc"][k] = h_ES

      def step(j, h_ES):
        t = k * cfg.chunk + j
        x = ps.row_inputs(_row(src, t), c.get("delta_bias"), cfg.softplus,
                          _valid(cfg, padded, i * cfg.tile + t))
        h_ES = ps.advance(h_ES, c["A2"], x)[1]
        dst["y"][t] = ps.output(h_ES, x, c.get("D")).astype(dst["y"].dtype)
        return h_ES
      return lax.fori_loop(0, cfg.chunk, step, h_ES)
    return lax.fori_loop(0, cfg.tile // cfg.chunk, chunk_fn, h_ES)

  return _call("mosaic_fwd_kernel", cfg, args, outs, rows, False, init, tile_fn,
               lambda h_ES: dict(hT=h_ES))


def backward(cfg, args, hc, gy, ghT):
  ins = dict(args, gy=gy, ghT=ghT, hc=hc)
  ins.pop("h0", None)  # The backward restarts from the saved chunk states instead.
  outs = dict(gu=args["u"].dtype, gdelta=args["delta"].dtype, gB=F32, gC=F32, gA=F32, gD=F32,
              gbias=F32, gh0=F32)
  if "z" in args:
    outs["gz"] = args["z"].dtype
  rows = dict(RNLE=cfg.chunk, RNLS=cfg.chunk, RNQLS=cfg.chunk, RNJES=1)
  padded, state = args["u"].shape[2], args["A"].shape[-1]

  def init(c):
    zeros_E = _zeros((BLOCK_E,), _ROW)
    return c["ghT"], _zeros(c["A"].shape, _TILE), zeros_E, zeros_E

  def tile_fn(i, src, dst, c, carry, hs_LES):
    valid = lambda t: _valid(cfg, padded, i * cfg.chunk + t)

    def recompute(t, h_ES):
      hs_LES[t] = h_ES
      x = ps.row_inputs(_row(src, t), c.get("delta_bias"), cfg.softplus, valid(t),
                        outputs=False)
      return ps.advance(h_ES, c["A2"], x)[1]
    lax.fori_loop(0, cfg.chunk, recompute, plgpu.load(src["hc"].at[0], layout=_TILE))

    def step(j, carry):
      t = cfg.chunk - 1 - j
      x = ps.row_inputs(_row(src, t), c.get("delta_bias"), cfg.softplus, valid(t))
      h_prev_ES = plgpu.load(hs_LES.at[t], layout=_TILE)
      carry, out = ps.bwd_step(h_prev_ES, ps.decay(c["A2"], x), c["A"], x, c.get("D"),
                               _row(src, t)("gy"), carry, cfg.softplus, valid(t))
      for name, row in out.items():
        dst[name][t] = row.astype(dst[name].dtype)
      return carry
    return lax.fori_loop(0, cfg.chunk, step, carry)

  final = lambda carry: dict(zip(("gh0", "gA", "gD", "gbias"), carry))
  return _call("mosaic_bwd_kernel", cfg, ins, outs, rows, True, init, tile_fn, final,
               [plgpu.SMEM((cfg.chunk, BLOCK_E, state), F32)])


def _zeros(shape, layout):
  return plgpu.layout_cast(jnp.zeros(shape, F32), layout)


def _valid(cfg, padded, t):
  """1.0 where step t is inside the true length, as a float scalar; None without padding."""
  return None if padded == cfg.length else (t < cfg.length).astype(F32)


def _row(src, t):
  """Row t of the staged tiles as float32, in the layout its broadcasts need."""
  def row(name):
    if name not in src:
      return None
    layout = _ROW if KINDS[name] == "RNLE" else _COL
    return plgpu.load(src[name].at[t], layout=layout).astype(F32)
  return row


def _block(kind, rows, state):
  return dict(RNLE=(rows, BLOCK_E), RNLS=(rows, state), RNQLS=(rows, state),
              RNJES=(rows, BLOCK_E, state), PES=(BLOCK_E, state), PE=(BLOCK_E,),
              RNES=(BLOCK_E, state), RNE=(BLOCK_E,))[kind]


def _view(ref, kind, pid, start=0, rows=0):
  """The GMEM window of program pid = (r, n, p, e), p the parameters' neuron (n, or 0 when
  shared): steps [start, start + rows) of streamed kinds."""
  r, n, p, e = pid
  es, ls = pl.ds(e * BLOCK_E, BLOCK_E), pl.ds(start, rows)
  return dict(RNLE=lambda: ref.at[r, n, ls, es], RNLS=lambda: ref.at[r, n, ls],
              RNQLS=lambda: ref.at[r, n, e, ls], RNJES=lambda: ref.at[r, n, ls, es],
              PES=lambda: ref.at[p, es], PE=lambda: ref.at[p, es], RNES=lambda: ref.at[r, n, es],
              RNE=lambda: ref.at[r, n, es])[kind]()


def _call(name, cfg, ins, outs, rows, reverse, init, tile_fn, final, scratch=()):
  """plgpu.kernel over (rows, neurons, channel blocks): per-program inputs are loaded to registers
  (dict c), carry = init(c); streamed operands go through SMEM, carry = tile_fn(i, src, dst, c,
  carry, *scratch) per tile i (reversed if reverse); final(carry) gives the per-program outputs.
  ins maps names to arrays, outs names to dtypes."""
  n_rows, neurons, length, width = ins["u"].shape
  state, shared = ins["A"].shape[-1], ins["A"].shape[0] == 1
  n_tiles, n_e = length // rows["RNLE"], width // BLOCK_E
  shape = dict(RNLE=(n_rows, neurons, length, width), RNQLS=(n_rows, neurons, n_e, length, state),
               RNJES=(n_rows, neurons, length // cfg.chunk, width, state),
               RNES=(n_rows, neurons, width, state), RNE=(n_rows, neurons, width))
  split = lambda names, streamed: [k for k in names if (KINDS[k] in _STREAMED) == streamed]
  src_names, dst_names = split(ins, True), split(outs, True)
  const_names, end_names = split(ins, False), split(outs, False)
  smem = lambda k, dtype, n=(): plgpu.SMEM(n + _block(KINDS[k], rows.get(KINDS[k]), state),
                                           dtype)

  def body(*refs, src, dst, const, end, bars, const_bar, scratch):
    r = dict(zip((*ins, *outs), refs))
    n = lax.axis_index("n")
    pid = (lax.axis_index("r"), n, 0 if shared else n, lax.axis_index("e"))
    for k in const_names:
      plgpu.copy_gmem_to_smem(_view(r[k], KINDS[k], pid), const[k], const_bar)
    plgpu.barrier_wait(const_bar)
    c = {k: plgpu.load(const[k], layout=_ROW if KINDS[k] == "PE" else _TILE).astype(F32)
         for k in const_names}
    c["A2"] = c["A"] * ps.LOG2E  # The decay is exp2(dt A2) (pallas_steps).
    window = lambda k, i: _view(r[k], KINDS[k], pid, i * rows[KINDS[k]], rows[KINDS[k]])
    order = (lambda j: n_tiles - 1 - j) if reverse else (lambda j: j)

    def fetch(j, slot):
      for k in src_names:
        plgpu.copy_gmem_to_smem(window(k, order(j)), src[k].at[slot], bars.at[slot])

    for j in range(min(2, n_tiles)):
      fetch(j, j)

    def pipelined(j, carry):
      slot = lax.rem(j, 2)
      plgpu.barrier_wait(bars.at[slot])
      plgpu.wait_smem_to_gmem(1, wait_read_only=True)  # This slot's last store has read it.
      carry = tile_fn(order(j), {k: src[k].at[slot] for k in src_names},
                      {k: dst[k].at[slot] for k in dst_names}, c, carry, *scratch)
      plgpu.commit_smem()  # Also a warpgroup barrier: every thread is done with the slot.
      for k in dst_names:
        plgpu.copy_smem_to_gmem(dst[k].at[slot], window(k, order(j)), commit_group=False)
      plgpu.commit_smem_to_gmem_group()
      pl.when(j + 2 < n_tiles)(lambda: fetch(j + 2, slot))
      return carry

    results = final(lax.fori_loop(0, n_tiles, pipelined, init(c)))
    for k in end_names:
      end[k][...] = results[k].astype(end[k].dtype)
    plgpu.commit_smem()
    for k in end_names:
      plgpu.copy_smem_to_gmem(end[k], _view(r[k], KINDS[k], pid))
    plgpu.wait_smem_to_gmem(0)

  body.__name__ = name
  out = plgpu.kernel(
      body,
      out_type=[jax.ShapeDtypeStruct(shape[KINDS[k]], dtype) for k, dtype in outs.items()],
      scratch_types=dict(
          src={k: smem(k, ins[k].dtype, (2,)) for k in src_names},
          dst={k: smem(k, outs[k], (2,)) for k in dst_names},
          const={k: smem(k, ins[k].dtype) for k in const_names},
          end={k: smem(k, outs[k]) for k in end_names},
          bars=plgpu.Barrier(num_arrivals=len(src_names), num_barriers=2),
          const_bar=plgpu.Barrier(num_arrivals=len(const_names)),
          scratch=list(scratch)),
      grid=(n_rows, neurons, n_e),
      grid_names=("r", "n", "e"),
      interpret=plgpu.InterpretGPUParams() if cfg.interpret else None,
  )(*ins.values())
  return dict(zip(outs, out))
