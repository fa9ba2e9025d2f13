"""`python -m inn_jax.roofline`: a train step's FLOPs and bytes by class, and its roofline bound.

    python -m inn_jax.roofline --config configs/text8.py:inn_paper --device H200 \\
        --batch 16 --seq 256 --dtype bfloat16 --scan_method pallas --out inn_paper_h200.json
    python -m inn_jax.roofline --config quickstart --device cpu --peak_gflops 500 \\
        --bandwidth_gbs 20

The step is the trainer's (inn_jax.train.step.build: model, AdamW, clipping, dropout, finite
check), with one micro-batch on a one-device mesh, traced to a jaxpr (jax.make_jaxpr on shapes:
nothing is compiled, allocated or run). The config is read as train.py reads it (--config
path.py[:variant] or a shipped name, --config.a.b=value); --batch, --seq, --dtype and
--scan_method override data.batch_size, data.seq_len, model.dtype and model.scan_method ("auto",
the default where the config says it, is what the named device runs: pallas on a GPU, blocked on
cpu). While tracing, the Pallas scan sees the named device's compute capability, so the jaxpr
holds the kernels that device would run (Mosaic for memories >= 128 channels on Hopper, else
Triton).

Counted per step (docs/roofline.md has the rules and the committed results):
  FLOPs  matmul       2*M*N*K of each dot_general outside the selective scan (equal to
                      inn_jax.train.flops.matmul_flops less the scan's own dot_generals);
         elementwise  one per output element of each arithmetic, transcendental, comparison
                      or select op, one per input element of each reduction;
         scan         everything inside jax.named_scope("selective_scan") (inn_jax.ops.scan),
                      forward and backward: its dot_generals, its elementwise ops, and each
                      fused kernel's body times its programs (or its cost_estimate).
  bytes  every array an op reads or writes, at its dtype's size, as traced (no fusion):
         matmul_operands, transposes_and_copies, elementwise, scan_io (the scan's kernels' or
         loops' operands and results), and params_and_optimizer (the train state read and
         written once).
The bound, in tokens/s = batch * seq / step time, for a device of DEVICES:
  time = max(sum_dtype matmul_flops_dtype / matmul_peak_dtype + (elementwise + scan) / vector,
             bytes / hbm_bandwidth)
with bytes = all op bytes ("as_traced") or matmul_operands + scan_io + params_and_optimizer
("fused": each layer fused around its matmuls and the scan, moving nothing else).
Writes --out path.json (optional) and prints a table. Errors of the user's making (flags, device,
config) print one line and exit 2, before any tracing.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import math
import pathlib
import re
import sys

import numpy as np

# Peak rates, dense (not the 2:4-sparsity figures NVIDIA's datasheets print first), per second.
# matmul: tensor-core peaks by operand dtype; "float32" is TF32 (what XLA runs an f32 matmul at
# default precision on), "float32_highest" an f32 matmul at Precision.HIGHEST, which cuBLAS runs
# in full f32 on the CUDA cores: the vector peak. vector: non-tensor-core f32 FLOP/s, the rate
# of elementwise work (bf16 elementwise runs at about the same rate: XLA computes it in f32).
# compute_capability: what the Pallas scan picks its kernel backend by while tracing. sms, clock:
# streaming multiprocessors and boost clock (Hz), for rates per SM (benchmarks/gpu_scan.py's
# exp floor: 16 exps a clock per SM).
DEVICES = {
    # NVIDIA H200 datasheet (SXM): 989 TFLOPS BF16 and 494 TF32 dense (1,979 / 989 with
    # sparsity), 67 TFLOPS FP32, 4.8 TB/s HBM3e. The same SM array as the H100 SXM.
    "H200": dict(matmul={"bfloat16": 989e12, "float16": 989e12, "float32": 494e12,
                         "float32_highest": 67e12},
                 vector=67e12, hbm=4.8e12, compute_capability=9.0, sms=132, clock=1.98e9,
                 source="NVIDIA H200 datasheet (SXM), dense"),
    # NVIDIA H100 datasheet, SXM5 80 GB: 989 BF16 / 494 TF32 dense, 67 FP32, 3.35 TB/s HBM3.
    "H100": dict(matmul={"bfloat16": 989e12, "float16": 989e12, "float32": 494e12,
                         "float32_highest": 67e12},
                 vector=67e12, hbm=3.35e12, compute_capability=9.0, sms=132, clock=1.98e9,
                 source="NVIDIA H100 datasheet (SXM5 80GB), dense"),
    # NVIDIA H100 datasheet, PCIe 80 GB: 756 BF16 / 378 TF32 dense, 51 FP32, 2.0 TB/s HBM2e.
    "H100-PCIe": dict(matmul={"bfloat16": 756e12, "float16": 756e12, "float32": 378e12,
                              "float32_highest": 51e12},
                      vector=51e12, hbm=2.0e12, compute_capability=9.0, sms=114, clock=1.755e9,
                      source="NVIDIA H100 datasheet (PCIe 80GB), dense"),
    # NVIDIA A100 datasheet, SXM4 80 GB: 312 BF16 / 156 TF32 dense, 19.5 FP32, 2,039 GB/s HBM2e.
    "A100": dict(matmul={"bfloat16": 312e12, "float16": 312e12, "float32": 156e12,
                         "float32_highest": 19.5e12},
                 vector=19.5e12, hbm=2.039e12, compute_capability=8.0, sms=108, clock=1.41e9,
                 source="NVIDIA A100 datasheet (SXM4 80GB), dense"),
    # The same, SXM4 40 GB: the compute of the 80 GB part, 1,555 GB/s HBM2.
    "A100-SXM4-40GB": dict(matmul={"bfloat16": 312e12, "float16": 312e12, "float32": 156e12,
                                   "float32_highest": 19.5e12},
                           vector=19.5e12, hbm=1.555e12, compute_capability=8.0, sms=108,
                           clock=1.41e9,
                           source="NVIDIA A100 datasheet (SXM4 40GB), dense"),
}
# jax's device_kind -> the DEVICES entry: the first substring that matches, most specific first
# ("NVIDIA H100 PCIe" is the PCIe part, "NVIDIA H100 80GB HBM3" the SXM5 one).
KINDS = (("H200", "H200"), ("H100 PCIe", "H100-PCIe"), ("H100", "H100"),
         ("A100-SXM4-40GB", "A100-SXM4-40GB"), ("A100", "A100"))
# --device cpu: rates from --peak_gflops (matmul), --vector_gflops (default: the same) and
# --bandwidth_gbs.
CPU = "cpu"

USAGE = ("usage: python -m inn_jax.roofline --config configs/x.py[:variant] --device "
         f"{{{','.join([*DEVICES, CPU])}}} [--batch B] [--seq L] [--dtype D] [--scan_method M] "
         "[--peak_gflops G --bandwidth_gbs W [--vector_gflops V]] [--vocab_size N] "
         "[--out path.json] [--config.a.b=value ...]")
_OWN_FLAGS = ("device", "batch", "seq", "dtype", "scan_method", "peak_gflops", "vector_gflops",
              "bandwidth_gbs", "vocab_size", "out")

FLOP_CLASSES = ("matmul", "elementwise", "scan")
BYTE_CLASSES = ("matmul_operands", "transposes_and_copies", "elementwise", "scan_io",
                "params_and_optimizer")
SCOPE = "selective_scan"  # inn_jax.ops.scan.selective_scan's jax.named_scope.

# One FLOP per output element (an SFU result, a compare or a select counts one, like an add).
ELEMENTWISE = frozenset("""
    add add_any sub mul div rem pow integer_pow neg sign abs max min square clamp select_n
    exp exp2 log log1p expm1 tanh logistic sin cos tan asin acos atan atan2 sinh cosh asinh acosh
    atanh sqrt rsqrt cbrt erf erfc erf_inv lgamma digamma igamma floor ceil round nextafter
    is_finite eq ne lt le gt ge and or not xor shift_left shift_right_logical
    shift_right_arithmetic population_count clz real imag conj complex reduce_precision
    """.split())
TRANSCENDENTAL = frozenset("""
    pow exp exp2 log log1p expm1 tanh logistic sin cos tan asin acos atan atan2 sinh cosh asinh
    acosh atanh sqrt rsqrt cbrt erf erfc erf_inv lgamma digamma igamma
    """.split())
# One FLOP per input element.
REDUCTIONS = frozenset("""
    reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or reduce_xor argmax argmin
    cumsum cumprod cummax cummin cumlogsumexp
    """.split())
# Elementwise bytes, no FLOPs: casts and the RNG (integer work, not floating point).
NO_FLOP_ELEMENTWISE = frozenset("""
    convert_element_type random_bits random_fold_in random_split random_seed random_wrap
    random_unwrap threefry2x32
    """.split())
# transposes_and_copies, input + output: ops that write a new layout or a new array.
COPIES = frozenset("transpose copy copy_p pad concatenate rev split stack sort".split())
# transposes_and_copies, the part touched: reads (and writes) the output's size, not the whole
# operand (a slice does not read what it drops).
PARTIAL_READS = frozenset("slice dynamic_slice gather".split())
# transposes_and_copies, in place: reads and writes the update's size (scatter-add also reads
# the region it adds to).
PARTIAL_WRITES = frozenset("dynamic_update_slice scatter scatter-add scatter_add scatter-mul "
                           "scatter-min scatter-max".split())
# Broadcasts (and iota) are fused into an elementwise consumer, which reads the broadcast shape
# (charged there); they materialise only for a consumer that needs a buffer (below) or as a
# jaxpr's result, and then count input + output as a copy.
MATERIALISING = frozenset("broadcast_in_dim iota".split())
# No data moves: a row-major reshape is a bitcast; the rest are annotations or scalar indices.
FREE = frozenset("""
    reshape squeeze expand_dims bitcast_convert_type sharding_constraint reshard stop_gradient
    pvary axis_index optimization_barrier device_put mesh_cast name
    """.split())
# Fused kernels: their operands and results are the HBM traffic; their body runs per program.
KERNELS = frozenset(("pallas_call", "mpmd_map", "core_map"))
LOOPS = frozenset(("scan", "while"))
# Consumers that read a buffer: a broadcast feeding one of them is materialised.
_BUFFER_CONSUMERS = frozenset(("dot_general", *KERNELS, *LOOPS, "cond", "custom_vjp_call",
                               "custom_jvp_call", *COPIES, *PARTIAL_WRITES))
_MODULE_SKIP = re.compile(r"->|,|^grads$")  # einsum specs and the step's own scope.


@dataclasses.dataclass
class Counts:
  """What `count` found, per step: FLOPs and bytes by class, and their breakdowns."""
  flops: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  bytes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  matmul_by_dtype: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  matmul_by_module: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  scan_detail: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  scan_scope_bytes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  bytes_by_primitive: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)
  bytes_by_module: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  transcendental: int = 0
  kernels: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  uncounted: collections.Counter = dataclasses.field(default_factory=collections.Counter)


def nbytes(aval) -> int:
  """Bytes of an abstract array (0 for what is not one: refs, tokens)."""
  shape = getattr(aval, "shape", None)
  dtype = getattr(aval, "dtype", None)
  if shape is None or dtype is None:
    return 0
  try:
    itemsize = np.dtype(dtype).itemsize
  except TypeError:  # Extended dtypes (PRNG keys) know their own size.
    itemsize = getattr(dtype, "itemsize", 0) or 0
  return int(math.prod(shape)) * int(itemsize)


def _size(aval) -> int:
  return int(math.prod(getattr(aval, "shape", ()) or ()))


def _sub_jaxprs(eqn):
  """The (Closed)Jaxprs among eqn's params, as inn_jax.train.flops.matmul_flops finds them."""
  for p in eqn.params.values():
    for sub in p if isinstance(p, (tuple, list)) else (p,):
      sub = sub if hasattr(sub, "eqns") else getattr(sub, "jaxpr", None)
      if hasattr(sub, "eqns"):
        yield sub


def _programs(eqn) -> list[tuple[object, int]]:
  """[(body jaxpr, programs it runs as)] of a fused kernel: a pallas_call's grid, a Mosaic GPU
  kernel's (mpmd_map) meshes; what has neither runs once."""
  if eqn.primitive.name == "pallas_call":
    return [(eqn.params["jaxpr"], math.prod(eqn.params["grid_mapping"].grid))]
  if "meshes" in eqn.params and "jaxprs" in eqn.params:
    out = []
    for mesh, body in zip(eqn.params["meshes"], eqn.params["jaxprs"]):
      grid = getattr(mesh, "grid", None) or tuple(getattr(mesh, "shape", {}).values())
      threads = getattr(mesh, "num_threads", None) or 1
      out.append((body, math.prod(grid) * threads))
    return out
  return [(sub, 1) for sub in _sub_jaxprs(eqn)]


def _kernel_name(eqn) -> str:
  """A fused kernel's name: the one it was given, else its body function's."""
  body = eqn.params.get("jaxpr") or next(iter(eqn.params.get("jaxprs", ())), None)
  debug = getattr(body, "debug_info", None)
  return eqn.params.get("name") or getattr(debug, "func_name", None) or eqn.primitive.name


def _matmul_dtype(eqn) -> str:
  """The peak a dot_general runs at: its operands' dtype (the wider of the two), f32 at
  Precision.HIGHEST apart (full f32, not TF32)."""
  dtypes = [np.dtype(v.aval.dtype) for v in eqn.invars[:2]]
  widest = max(dtypes, key=lambda d: d.itemsize)
  if widest.itemsize <= 2:
    return "float16" if all(d == np.float16 for d in dtypes) else "bfloat16"
  return "float32_highest" if "HIGHEST" in str(eqn.params.get("precision")) else "float32"


def module_of(name_stack: str) -> str:
  """A matmul's module, from its name stack: transforms unwrapped (jvp(...), transpose(...)),
  layer indices folded, einsum specs dropped: "layer_*/communication", "head"."""
  parts = []
  for part in name_stack.split("/"):
    while (m := re.fullmatch(r"[\w.]+\((.*)\)", part)):
      part = m.group(1)
    if part and not _MODULE_SKIP.search(part):
      parts.append(re.sub(r"_\d+$", "_*", part))
  return "/".join(parts[:2]) or "(top level)"


def count(jaxpr) -> Counts:
  """FLOPs and bytes by class of a (Closed)Jaxpr (the module docstring's classes)."""
  counts = Counts()
  _walk(getattr(jaxpr, "jaxpr", jaxpr), 1, counts, scope=False, moves=True, kernel=False,
        stack="")
  return counts


def _consumers(jaxpr) -> dict:
  """{var: primitive names that read it}, "<result>" for the jaxpr's outputs."""
  users = collections.defaultdict(set)
  for eqn in jaxpr.eqns:
    for v in eqn.invars:
      if not hasattr(v, "val"):  # Literals are not variables.
        users[v].add(eqn.primitive.name)
  for v in jaxpr.outvars:
    if not hasattr(v, "val"):
      users[v].add("<result>")
  return users


def _walk(jaxpr, mult: int, counts: Counts, *, scope: bool, moves: bool, kernel: bool,
          stack: str):
  """Adds jaxpr's eqns, each `mult` times. scope: inside the selective scan (a sub-jaxpr inherits
  its eqn's scope); moves: bytes count here (not inside a fused kernel or the scan's loops, whose
  traffic is their operands and results); kernel: inside a fused kernel's body."""
  users = _consumers(jaxpr) if moves else {}
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    own_stack = str(eqn.source_info.name_stack)
    in_scope = scope or SCOPE in own_stack
    full_stack = f"{stack}/{own_stack}" if stack and own_stack else stack or own_stack
    ins = sum(nbytes(v.aval) for v in eqn.invars)
    outs = sum(nbytes(v.aval) for v in eqn.outvars)
    out_size = sum(_size(v.aval) for v in eqn.outvars)

    def add_flops(cls: str, n: int, detail: str):
      counts.flops["scan" if in_scope else cls] += mult * n
      if in_scope:
        counts.scan_detail["kernel" if kernel else detail] += mult * n

    def add_bytes(cls: str, n: int):
      if moves and n:
        counts.bytes[cls] += mult * n
        counts.bytes_by_primitive[name] += mult * n
        counts.bytes_by_module[cls, module_of(full_stack)] += mult * n
        if in_scope:
          counts.scan_scope_bytes[cls] += mult * n

    if name == "dot_general":
      (lhs_contract, _), _ = eqn.params["dimension_numbers"]
      k = math.prod(eqn.invars[0].aval.shape[d] for d in lhs_contract)
      n = 2 * k * out_size
      add_flops("matmul", n, "dot_general")
      if not in_scope:
        counts.matmul_by_dtype[_matmul_dtype(eqn)] += mult * n
        counts.matmul_by_module[module_of(full_stack)] += mult * n
      add_bytes("matmul_operands", ins + outs)
    elif name in ELEMENTWISE:
      add_flops("elementwise", out_size, "elementwise")
      if name in TRANSCENDENTAL:
        counts.transcendental += mult * out_size
      add_bytes("elementwise", ins + outs)
    elif name in REDUCTIONS:
      add_flops("elementwise", sum(_size(v.aval) for v in eqn.invars), "elementwise")
      add_bytes("elementwise", ins + outs)
    elif name in NO_FLOP_ELEMENTWISE:
      add_bytes("elementwise", ins + outs)
    elif name in COPIES:
      add_bytes("transposes_and_copies", ins + outs)
    elif name in PARTIAL_READS:
      indices = sum(nbytes(v.aval) for v in eqn.invars[1:])
      add_bytes("transposes_and_copies", 2 * outs + indices)
    elif name in PARTIAL_WRITES:
      update = nbytes(eqn.invars[-1].aval)
      indices = sum(nbytes(v.aval) for v in eqn.invars[1:-1])
      add_bytes("transposes_and_copies", (3 if "add" in name else 2) * update + indices)
    elif name in MATERIALISING:
      if eqn.invars and out_size == _size(eqn.invars[0].aval):
        pass  # Only size-1 axes added: a reshape, free.
      elif any(users.get(v, set()) & (_BUFFER_CONSUMERS | {"<result>"}) for v in eqn.outvars):
        add_bytes("transposes_and_copies", ins + outs)
    elif name in FREE:
      pass
    elif name in KERNELS:
      counts.kernels[_kernel_name(eqn)] += mult
      add_bytes("scan_io" if in_scope else "elementwise", ins + outs)
      estimate = eqn.params.get("cost_estimate")
      if estimate is not None:  # The kernel's own declaration, when it makes one.
        add_flops("elementwise", estimate.flops + estimate.transcendentals, "kernel")
        continue
      for body, programs in _programs(eqn):
        _walk(getattr(body, "jaxpr", body), mult * programs, counts, scope=in_scope,
              moves=False, kernel=True, stack=full_stack)
      continue
    elif name in LOOPS and in_scope and moves:
      # The scan's own loop: its operands and results once (xs read, ys written, the carry in
      # and out); what its body does per step stays on chip in a fused scan.
      add_bytes("scan_io", ins + outs)
    elif not kernel and not any(True for _ in _sub_jaxprs(eqn)):
      counts.uncounted[name] += mult  # (A kernel's loads and stores are on chip: not HBM.)
    inner = mult * (eqn.params.get("length", 1) if name == "scan" else 1)
    if name == "shard_map":
      from inn_jax.train import flops as flops_lib
      inner = mult * flops_lib._distinct_shards(eqn.params["mesh"], eqn.params["in_specs"])
    inner_moves = moves and not (name in LOOPS and in_scope)
    for sub in _sub_jaxprs(eqn):
      _walk(sub, inner, counts, scope=in_scope, moves=inner_moves, kernel=kernel,
            stack=full_stack)


def state_bytes(state) -> int:
  """params_and_optimizer: every leaf of the train state (params, AdamW moments, counters) read
  once and written once."""
  import jax
  return 2 * sum(nbytes(x) for x in jax.tree.leaves(state))


def bound(flops_by_class: dict, matmul_by_dtype: dict, moved: int, device: dict,
          tokens: int) -> dict:
  """The roofline bound of a step of `tokens` tokens: its time is the larger of the compute
  time (matmuls at their dtype's peak, the rest at the vector rate) and moved / HBM bandwidth."""
  matmul_s = sum(n / device["matmul"][dtype] for dtype, n in matmul_by_dtype.items())
  vector_s = (flops_by_class["elementwise"] + flops_by_class["scan"]) / device["vector"]
  compute_s, memory_s = matmul_s + vector_s, moved / device["hbm"]
  step_s = max(compute_s, memory_s)
  total = sum(flops_by_class[c] for c in FLOP_CLASSES)
  binds = ("memory (HBM bandwidth)" if memory_s >= compute_s
           else "compute (matmul units)" if matmul_s >= vector_s
           else "compute (vector units)")
  return dict(tokens_per_s=tokens / step_s if step_s else math.inf, step_s=step_s,
              compute_s=compute_s, matmul_s=matmul_s, vector_s=vector_s, memory_s=memory_s,
              bytes=moved, arithmetic_intensity=total / moved if moved else math.inf,
              binds=binds)


def bounds(counts: Counts, state_moved: int, device: dict, tokens: int) -> dict:
  """{"as_traced", "fused"}: bound() with all bytes, and with matmul operands, the scan's
  inputs and outputs and the state only."""
  moved = {**counts.bytes, "params_and_optimizer": state_moved}
  traced = sum(moved.get(c, 0) for c in BYTE_CLASSES if c != "params_and_optimizer")
  fused = sum(moved.get(c, 0) for c in ("matmul_operands", "scan_io", "params_and_optimizer"))
  return {name: bound(counts.flops, counts.matmul_by_dtype, b, device, tokens)
          for name, b in (("as_traced", traced), ("fused", fused))}


METHOD = (
    "Traced jaxpr of the train step (inn_jax.train.step.build, 1 micro-batch, 1 device); nothing "
    "compiled. FLOPs: matmul = 2*M*N*K per dot_general outside the selective scan; elementwise "
    "= 1 per output element of arithmetic/transcendental/compare/select ops, 1 per input "
    "element of reductions; scan = all work under named_scope('selective_scan'), fused kernels "
    "as body x programs. Loop bodies x trip count, other sub-jaxprs once. Bytes: inputs + "
    "outputs of each op at its dtype, unfused; reshapes free; broadcasts only where a buffer "
    "needs them; slices/updates the part touched; the scan's kernels and loops count their "
    "operands and results (scan_io), not their insides; params_and_optimizer = 2 x train "
    "state. time = max(sum matmul_d/peak_d + (elementwise+scan)/vector, bytes/HBM); as_traced: "
    "all op bytes; fused: matmul_operands + scan_io + params_and_optimizer. tokens/s = B*L/time.")


# --- the train step ------------------------------------------------------------------------


def _capability_of(device: dict):
  """The Pallas scan picks its backend (Mosaic, Triton) from the GPU's compute capability; while
  tracing for `device` it sees that device's (pallas_scan.traced_for), so the jaxpr holds the
  kernels that device would run, not the CPU's interpret-mode default."""
  from inn_jax.ops import pallas_scan
  capability = device.get("compute_capability")
  return contextlib.nullcontext() if capability is None else pallas_scan.traced_for(capability)


def trace_train_step(config, vocab_size: int, device: dict | None = None, parts=None):
  """(closed jaxpr of the train step, abstract train state, TrainParts) of `config` (batch
  data.batch_size x data.seq_len, one micro-batch) as `device` would run it (its compute
  capability picks the Pallas backend), on parts' mesh (default: step.build(config,
  vocab_size)). Shapes only: nothing compiled or run."""
  import jax
  import jax.numpy as jnp

  from inn_jax.train import step
  parts = parts if parts is not None else step.build(config, vocab_size)
  state = jax.eval_shape(parts.init_state)
  tokens = jax.ShapeDtypeStruct(parts.shape, jnp.int32)
  with _capability_of(device or {}), jax.set_mesh(parts.mesh):
    jaxpr = jax.make_jaxpr(parts.make_step(1))(state, tokens, tokens)
  return jaxpr, state, parts


def analyse(config, vocab_size: int, device: dict, spec: str = "") -> dict:
  """The roofline report (the JSON the CLI writes) of config's train step on `device` (a DEVICES
  entry with its "name")."""
  import jax

  from inn_jax.train import flops as flops_lib
  jaxpr, state, parts = trace_train_step(config, vocab_size, device)
  counts = count(jaxpr)
  moved = state_bytes(state)
  batch, seq = parts.shape
  n_params = sum(_size(x) for x in jax.tree.leaves(state["params"]))
  flops = {c: int(counts.flops[c]) for c in FLOP_CLASSES}
  return dict(
      config=spec, model=config.model.kind, batch=batch, seq=seq, tokens_per_step=batch * seq,
      dtype=config.model.dtype, scan_method=config.model.get("scan_method"),
      kernels=dict(sorted(counts.kernels.items())), params=n_params, device=device,
      flops={**flops, "total": sum(flops.values())},
      flops_detail=dict(
          matmul_by_dtype=_sorted(counts.matmul_by_dtype),
          matmul_by_module=_sorted(counts.matmul_by_module),
          scan=_sorted(counts.scan_detail), transcendental=int(counts.transcendental),
          # The summary's count of every dot_general (the scan's included): = matmul +
          # scan["dot_general"] where no kernel body has a matmul (none here has).
          train_flops_matmul_flops=flops_lib.matmul_flops(jaxpr.jaxpr)),
      bytes={**{c: int(counts.bytes[c]) for c in BYTE_CLASSES[:-1]},
             "params_and_optimizer": moved},
      bytes_detail=dict(in_scan_scope=_sorted(counts.scan_scope_bytes),
                        by_primitive=_sorted(counts.bytes_by_primitive, 15),
                        by_module={c: {m: int(n) for (k, m), n in
                                       counts.bytes_by_module.most_common() if k == c}
                                   for c in BYTE_CLASSES[:-1]}),
      uncounted_primitives=_sorted(counts.uncounted),
      bounds=bounds(counts, moved, device, batch * seq), method=METHOD)


def _sorted(counter, top: int | None = None) -> dict:
  return {k: int(v) for k, v in counter.most_common(top)}


# --- the command line -----------------------------------------------------------------------


def device_of_kind(kind: str) -> dict | None:
  """The DEVICES entry (with its "name") of a jax device_kind such as "NVIDIA H100 80GB HBM3";
  None for a device the table lacks."""
  key = next((k for sub, k in KINDS if sub in kind), None)
  return None if key is None else dict(name=key, **DEVICES[key])


def _own_flags(argv) -> tuple[dict, list[str]]:
  """{flag: value} of this tool's flags, and the rest of argv (train.py's --config flags)."""
  own, rest, args = {}, [], list(argv)
  while args:
    arg = args.pop(0)
    name, eq, value = arg.partition("=")
    if name.startswith("--") and name[2:] in _OWN_FLAGS:
      if not eq:
        if not args:
          raise ValueError(f"{name}: missing value; {USAGE}.")
        value = args.pop(0)
      own[name[2:]] = value
    else:
      rest.append(arg)
  return own, rest


def _number(own: dict, flag: str, kind, default=None):
  """own[flag] as a positive `kind`, or default when absent."""
  if flag not in own:
    return default
  try:
    value = kind(own[flag])
  except ValueError:
    value = 0
  if not value > 0:
    raise ValueError(f"--{flag} {own[flag]}: must be a positive "
                     f"{'integer' if kind is int else 'number'}.")
  return value


def device_entry(own: dict) -> dict:
  """The DEVICES entry --device names (any case), or the cpu entry of --peak_gflops,
  --vector_gflops and --bandwidth_gbs; ValueError naming the flag otherwise."""
  choices = [*DEVICES, CPU]
  given = own.get("device")
  if given is None:
    raise ValueError(f"--device: missing; give one of {choices}.")
  key = {k.lower(): k for k in choices}.get(given.lower())
  if key is None:
    raise ValueError(f"--device {given}: unknown device; choose one of {choices} (cpu with "
                     "--peak_gflops G --bandwidth_gbs W).")
  if key != CPU:
    for flag in ("peak_gflops", "vector_gflops", "bandwidth_gbs"):
      if flag in own:
        raise ValueError(f"--{flag} {own[flag]}: applies to --device cpu only; {key}'s rates "
                         "are in inn_jax.roofline.DEVICES.")
    return dict(name=key, **DEVICES[key])
  for flag, what in (("peak_gflops", "matmul peak in GFLOP/s"),
                     ("bandwidth_gbs", "memory bandwidth in GB/s")):
    if flag not in own:
      raise ValueError(f"--device cpu needs --{flag}: give the machine's {what} (e.g. "
                       "--peak_gflops 500 --bandwidth_gbs 20).")
  peak = _number(own, "peak_gflops", float) * 1e9
  vector = _number(own, "vector_gflops", float, peak / 1e9) * 1e9
  return dict(name=CPU, matmul={d: peak for d in DEVICES["H100"]["matmul"]}, vector=vector,
              hbm=_number(own, "bandwidth_gbs", float) * 1e9, compute_capability=None,
              source="--peak_gflops, --vector_gflops, --bandwidth_gbs")


def _vocab_size(config, given) -> int:
  """--vocab_size, else the size the corpus fixes (text8-normalised text: 27); nothing read."""
  if given is not None:
    return _number({"vocab_size": given}, "vocab_size", int)
  from inn_jax import data
  if config.data.normalize == "text8":
    return len(data.TEXT8_ALPHABET)
  spec = data.CORPORA.get(config.data.name)
  if spec is not None and spec.fixed_vocab:
    return spec.fixed_vocab().size
  raise ValueError(f"--vocab_size: the vocabulary of {config.data.name} depends on its files; "
                   "give --vocab_size N.")


def configure(rest: list[str], own: dict, device: dict):
  """The config of --config and its overrides, with this tool's: batch, length, dtype and scan
  method, one micro-batch on a one-device mesh. ValueError on a bad flag or config."""
  import jax

  from inn_jax.ops import scan as scan_ops
  from inn_jax.train import config as config_lib
  from inn_jax.train import validate
  c = config_lib.from_argv(rest)
  c.data.batch_size = _number(own, "batch", int, c.data.batch_size)
  c.data.seq_len = _number(own, "seq", int, c.data.seq_len)
  if "dtype" in own:
    if own["dtype"] not in validate.DTYPES:
      raise ValueError(f"--dtype {own['dtype']}: choose one of {validate.DTYPES}.")
    c.model.dtype = own["dtype"]
  if "scan_method" in c.model:
    method = own.get("scan_method", c.model.scan_method)
    if method not in scan_ops.METHODS:
      raise ValueError(f"--scan_method {method}: choose one of {scan_ops.METHODS}.")
    if method == "auto":  # What the named device runs, not this machine.
      method = "blocked" if device["name"] == CPU else "pallas"
    c.model.scan_method = method
  elif "scan_method" in own:
    raise ValueError(f"--scan_method {own['scan_method']}: model.kind={c.model.kind!r} has no "
                     "selective scan; drop the flag.")
  c.train.microbatches = 1
  c.mesh.data, c.mesh.neuron = 1, 1
  validate.check_config(c, jax.device_count())
  return c


def _spec(rest: list[str]) -> str:
  """The --config value, with any --config.a.b=value overrides after it (as given)."""
  spec, others, args = "", [], list(rest)
  while args:
    arg = args.pop(0)
    if arg == "--config" and args:
      spec = args.pop(0)
    elif arg.startswith("--config="):
      spec = arg.partition("=")[2]
    else:
      others.append(arg)
  return " ".join([spec, *others])


def table(report: dict) -> str:
  """The report as a few lines of text."""
  g = lambda x: f"{x:.3g}"
  f, b = report["flops"], report["bytes"]
  kernels = ", ".join(report["kernels"]) or "none"
  lines = [
      f"roofline of {report['config']} ({report['model']}, {report['params']:,} params): "
      f"{report['batch']} x {report['seq']}, {report['dtype']}, scan {report['scan_method']} "
      f"(kernels: {kernels}), on {report['device']['name']}",
      "FLOPs/step  " + "  ".join(f"{c} {g(f[c])}" for c in (*FLOP_CLASSES, "total")),
      "bytes/step  " + "  ".join(f"{c} {g(b[c])}" for c in BYTE_CLASSES),
      f"{'bound':<10} {'tokens/s':>10} {'step ms':>9} {'matmul ms':>10} {'vector ms':>10} "
      f"{'memory ms':>10} {'FLOP/byte':>10}  binds"]
  for name, r in report["bounds"].items():
    lines.append(f"{name:<10} {r['tokens_per_s']:>10.4g} {1e3 * r['step_s']:>9.3g} "
                 f"{1e3 * r['matmul_s']:>10.3g} {1e3 * r['vector_s']:>10.3g} "
                 f"{1e3 * r['memory_s']:>10.3g} {r['arithmetic_intensity']:>10.3g}  "
                 f"{r['binds']}")
  return "\n".join(lines)


def main(argv=None) -> dict:
  own, rest = _own_flags(sys.argv[1:] if argv is None else argv)
  device = device_entry(own)  # Flags first: no config read, nothing traced on a bad one.
  out = pathlib.Path(own["out"]) if "out" in own else None
  if out is not None and out.suffix != ".json":
    raise ValueError(f"--out {out}: give a path ending in .json.")
  config = configure(rest, own, device)
  report = analyse(config, _vocab_size(config, own.get("vocab_size")), device, _spec(rest))
  print(table(report))
  if out is not None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
  return report


def cli(argv=None):
  try:
    main(argv)
  except (ValueError, OSError) as e:  # Flag, device and config errors: one line, exit 2.
    text = " ".join(str(e).split())
    print(f"error: {text}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  cli()
