"""The fused Pallas scan's entry and Triton kernel against the sequential scan: interpret mode on
CPU, CUDA lowering, GPU (the Mosaic GPU kernel: test_pallas_scan_mosaic.py); and, for both
backends, the interpret-mode matrix of lengths, widths and dtypes and the size of the programs
they lower to as the length changes."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inn_jax.ops import pallas_scan, pallas_scan_triton, scan
from tests.trees import assert_trees_close

F32, BF16 = jnp.float32, jnp.bfloat16
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "h0")
# Both sides compute in float32 from the same inputs; only the summation order differs.
F32_TOL = 1e-5
# With bf16 inputs both sides still compute in float32 from identical bf16 values, then round
# y and the bf16 gradients to bf16: an f32 reordering can flip that rounding by one bf16 ulp,
# 2**-8 relative, so allow two.
BF16_TOL = 2.0**-7


def _inputs(key, batch, length, width, state, dtype, softplus, optional, neurons=None):
  """Random inputs; u, delta, B, C, z in dtype, the parameters and h0 in float32. With neurons,
  a population: leading axes (batch, neurons) and one A, D, delta_bias per neuron."""
  k = jax.random.split(key, 9)
  # Without softplus dt = delta + bias must stay positive, or exp(dt * A) grows without bound.
  lo, hi = (-2.0, 1.0) if softplus else (0.0, 0.5)
  lead, own = ((batch,), ()) if neurons is None else ((batch, neurons), (neurons,))
  args = dict(
      u=jax.random.normal(k[0], (*lead, length, width)),
      delta=jax.random.uniform(k[1], (*lead, length, width), minval=lo, maxval=hi),
      A=-jnp.exp(jax.random.normal(k[2], (*own, width, state))),
      B=jax.random.normal(k[3], (*lead, length, state)),
      C=jax.random.normal(k[4], (*lead, length, state)),
      D=jax.random.normal(k[5], (*own, width)),
      z=jax.random.normal(k[6], (*lead, length, width)),
      delta_bias=jax.random.uniform(k[7], (*own, width), maxval=0.3),
      h0=jax.random.normal(k[8], (*lead, width, state)))
  low = ("u", "delta", "B", "C", "z")
  return {n: (v.astype(dtype) if n in low else v) for n, v in args.items() if n in optional}


def _vjp(fn, args, key, **kw):
  """(y, h) and the gradients of <y, gy> + <h, gh> for random cotangents (gy, gh)."""
  names = sorted(args)
  def f(*vals):
    return fn(**dict(zip(names, vals)), return_state=True, **kw)
  out, pullback = jax.vjp(f, *[args[n] for n in names])
  k1, k2 = jax.random.split(key)
  cot = (jax.random.normal(k1, out[0].shape).astype(out[0].dtype),
         jax.random.normal(k2, out[1].shape))
  return out, dict(zip(names, pullback(cot)))


def _close(got, want, tol, what):
  got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
  scale = max(float(np.abs(want).max()), 1e-6)
  np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale, err_msg=what)


def _trees_close(got, want, tol):
  """_close on every leaf of two trees of the same structure, in one chex comparison."""
  assert_trees_close(got, want, rtol=tol, scaled_atol=tol, floor=1e-6)


CASES = [  # (dtype, batch, length, width, state, softplus, optional inputs, chunk)
    (F32, 2, 13, 6, 3, True, NAMES, 4),            # everything, a tail chunk, padded state
    (F32, 2, 37, 40, 16, False, ("u", "delta", "A", "B", "C"), 8),
    (F32, 1, 16, 8, 5, True, ("u", "delta", "A", "B", "C", "z", "h0"), 4),  # no tail chunk
    (F32, 2, 3, 6, 4, False, ("u", "delta", "A", "B", "C", "D", "delta_bias"), 4),  # tail only
    (BF16, 2, 13, 6, 3, True, NAMES, 4),
    (BF16, 2, 37, 40, 16, True, ("u", "delta", "A", "B", "C", "D", "z"), 8),
]


@pytest.mark.parametrize("dtype,batch,length,width,state,softplus,optional,chunk", CASES)
def test_interpret_matches_sequential(dtype, batch, length, width, state, softplus, optional,
                                      chunk):
  args = _inputs(jax.random.key(length * width), batch, length, width, state, dtype, softplus,
                 optional)
  kernel = lambda *a, **k: pallas_scan.selective_scan(*a, **k, backend="triton", interpret=True,
                                                      chunk=chunk)
  check_against_sequential(kernel, args, dtype, softplus)


def check_against_sequential(kernel, args, dtype, softplus):
  """y, the final state and every gradient of `kernel` equal the sequential scan's."""
  kw = dict(delta_softplus=softplus)
  key = jax.random.key(1)
  (y, h), grads = _vjp(kernel, args, key, **kw)
  (y_ref, h_ref), grads_ref = _vjp(scan.selective_scan, args, key, method="sequential", **kw)
  tol = F32_TOL if dtype == F32 else BF16_TOL
  assert y.dtype == dtype and h.dtype == F32 and h.shape == h_ref.shape
  for name in args:
    assert grads[name].dtype == args[name].dtype, name
  _trees_close(dict(y=y, final_state=h, grads=grads),
               dict(y=y_ref, final_state=h_ref, grads=grads_ref), tol)


def test_dispatch_through_scan_with_default_chunk():
  args = _inputs(jax.random.key(0), 2, 21, 8, 4, F32, True, NAMES)
  got = scan.selective_scan(**args, delta_softplus=True, method="pallas")
  want = scan.selective_scan(**args, delta_softplus=True, method="sequential")
  _close(got, want, F32_TOL, "y")


def test_vmap_over_leading_axis():
  check_vmap_against_sequential(
      lambda *a, **k: pallas_scan.selective_scan(*a, **k, backend="triton", interpret=True,
                                                 chunk=4))


def check_vmap_against_sequential(kernel):
  """vmap over an extra leading axis: values and gradients equal the sequential scan's."""
  args = _inputs(jax.random.key(2), 2, 9, 6, 3, F32, True, NAMES)
  batched = {n: jnp.stack([v, 0.5 * v]) for n, v in args.items()}
  names = ("u", "delta", "B", "C")

  def loss(fn, **kw):
    def f(u, delta, B, C):
      y, h = fn(u, delta, args["A"], B, C, args["D"], args["z"], args["delta_bias"], True,
                h0=args["h0"], return_state=True, **kw)
      return jnp.sum(y * jnp.sin(y)) + jnp.sum(h**2)
    return jax.vmap(jax.value_and_grad(f, argnums=(0, 1, 2, 3)))

  got = loss(kernel)(*[batched[n] for n in names])
  want = loss(scan.selective_scan, method="sequential")(*[batched[n] for n in names])
  _trees_close(got, want, F32_TOL)  # (values, grads), as F32_TOL says.


def test_population_with_per_neuron_parameters():
  check_population_against_sequential(
      lambda *a, **k: pallas_scan.selective_scan(*a, **k, backend="triton", interpret=True,
                                                 chunk=4))


def check_population_against_sequential(kernel):
  """Leading (B, N) axes with A, D, delta_bias per neuron (one kernel per neuron, vmapped):
  values and every gradient equal the sequential scan's."""
  batch, neurons = 2, 3
  args = _inputs(jax.random.key(3), batch * neurons, 7, 6, 3, F32, True, NAMES)
  args = {n: (v.reshape(batch, neurons, *v.shape[1:]) if n not in ("A", "D", "delta_bias")
              else jnp.stack([v * (1 + 0.5 * i) for i in range(neurons)]))
          for n, v in args.items()}
  check_against_sequential(kernel, args, F32, True)


def test_not_supported_on_cpu():
  assert not pallas_scan.is_supported() and pallas_scan.default_backend() is None
  assert scan.auto_method() != "pallas"


@pytest.mark.parametrize("capability,backend", [(9.0, "mosaic"), (10.0, "mosaic"),
                                                (8.6, "triton"), (8.0, "triton"), (7.5, None)])
def test_default_backend_by_compute_capability(monkeypatch, capability, backend):
  monkeypatch.setattr(pallas_scan, "_capability", lambda: capability)
  assert pallas_scan.default_backend() == backend
  assert pallas_scan.is_supported() == (backend is not None)
  # Per call: memories narrower than Mosaic's 128-channel program run on Triton everywhere.
  wide = pallas_scan.MOSAIC_MIN_WIDTH
  assert pallas_scan.backend_for(wide) == (backend or "triton")
  assert pallas_scan.backend_for(16) == "triton"
  assert pallas_scan.available_backends() == (("mosaic", "triton") if backend == "mosaic"
                                              else (backend,) if backend else ())


@pytest.mark.parametrize("bad", [dict(block=(64,)), dict(num_warps=(4, 0)),
                                 dict(chunk=0), dict(A=jnp.zeros((5, 3))),
                                 dict(backend="cuda"), dict(tile=16)])
def test_bad_arguments_raise(bad):
  args = _inputs(jax.random.key(0), 1, 4, 6, 3, F32, False, ("u", "delta", "A", "B", "C"))
  args.update({k: v for k, v in bad.items() if k in args})
  opts = {k: v for k, v in bad.items() if k not in args}
  with pytest.raises(ValueError, match="block|num_warps|chunk|A must be|backend|tile"):
    pallas_scan.selective_scan(**args, **opts)


def _lower_for_cuda(fn, *shapes):
  """StableHLO for a CUDA H200, lowered on this host, and the kernels it embeds as verified
  module text by kernel name: Triton IR, or Mosaic GPU's module (stored in its serialised form)."""
  from jax._src.interpreters import mlir
  from jax._src.lib.mlir import ir, passmanager
  from jax._src.lib.triton import dialect as tt_dialect
  from jax.experimental.mosaic import gpu as mgpu
  device = jax.sharding.AbstractDevice(device_kind="NVIDIA H200", num_cores=None, platform="gpu")
  with jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((1,), ("x",),
                                                                abstract_device=device)):
    lowered = jax.jit(fn).trace(*shapes).lower(lowering_platforms=("cuda",))
  configs = []
  def walk(op):
    for block in (b for region in op.regions for b in region.blocks):
      for child in block.operations:
        if child.operation.name == "stablehlo.custom_call":
          configs.append(child.operation.attributes["mhlo.backend_config"])
        walk(child.operation)
  walk(lowered.compiler_ir("stablehlo").operation)
  ctx = mlir.JaxIrContext()
  ctx.append_dialect_registry(mlir.upstream_dialects)
  tt_dialect.register_dialect(ctx)
  mgpu.dialect.register_dialect(ctx)
  ctx.load_all_available_dialects()
  kernels = {}
  with ctx:
    for config in configs:
      if "ir" in config:  # Triton
        module = ir.Module.parse(ir.StringAttr(config["ir"]).value_bytes)
        name = ir.StringAttr(config["name"]).value
      else:  # Mosaic GPU
        ctx.allow_unregistered_dialects = True  # Its stable serialisation dialect.
        module = ir.Module.parse(ir.StringAttr(config["module"]).value_bytes)
        passmanager.PassManager.parse("builtin.module(mosaic_gpu-serde{serialize=false})").run(
            module.operation)
        ctx.allow_unregistered_dialects = False
        name = re.search(r"func\.func @(\w+)_mosaic_gpu\(", str(module)).group(1)
      assert module.operation.verify()
      kernels[name] = str(module)
  return lowered.as_text(), kernels


@pytest.mark.filterwarnings("ignore:The Pallas Triton backend is deprecated")
@pytest.mark.parametrize("dtype,batch,length,width,state", [(BF16, 512, 256, 512, 16),
                                                             (F32, 3, 37, 40, 3)])
def test_lowers_for_cuda(dtype, batch, length, width, state):
  sd = jax.ShapeDtypeStruct
  shapes = dict(u=sd((batch, length, width), dtype), delta=sd((batch, length, width), dtype),
                A=sd((width, state), F32), B=sd((batch, length, state), dtype),
                C=sd((batch, length, state), dtype), D=sd((width,), F32),
                z=sd((batch, length, width), dtype), delta_bias=sd((width,), F32),
                h0=sd((batch, width, state), F32))
  def loss(*vals):
    y, h = pallas_scan.selective_scan(*vals[:8], True, h0=vals[8], return_state=True,
                                      backend="triton", interpret=False)
    return jnp.sum(y.astype(F32)) + jnp.sum(h)
  grad = jax.value_and_grad(loss, argnums=tuple(range(9)))
  hlo, kernels = _lower_for_cuda(grad, *shapes.values())
  assert sorted(kernels) == ["bwd_kernel", "fwd_kernel"]
  for text in kernels.values():
    assert "tt.func public" in text and "scf.for" in text
  # The per-step state (batch, length, channels, state) never reaches HBM.
  assert not re.search(rf"tensor<{batch}x{length}x{width}x\d+x", hlo)
  assert len(re.findall(r"__gpu\$xla\.gpu\.triton", hlo)) == 2


# The interpret-mode matrix, both backends: every length kind (one step; under one chunk; many
# chunks and a part), narrow per-neuron memories (8 and 16 channels: the default INN's, batch 2 x
# 4 neurons with their own A, D, delta_bias) and a wide shared one (the paper code's 512), both
# dtypes. Interpret mode is slow (5-240 s a case on 2 CPU cores): the default suite runs one
# case a backend, benchmarks/slow_tests.sh all of them (-m slow).
_FAST = {("triton", BF16, 7, 16), ("mosaic", F32, 1, 8)}
MATRIX = [pytest.param(backend, dtype, length, width,
                       marks=() if (backend, dtype, length, width) in _FAST else pytest.mark.slow,
                       id=f"{backend}-{jnp.dtype(dtype).name}-L{length}-E{width}")
          for backend in pallas_scan.BACKENDS for dtype in (F32, BF16) for length in (1, 7, 300)
          for width in (8, 16, 512)]


@pytest.mark.parametrize("backend,dtype,length,width", MATRIX)
def test_interpret_matrix_matches_sequential(backend, dtype, length, width):
  neurons = 4 if width < 128 else None
  args = _inputs(jax.random.key(length + width), 2, length, width, 16, dtype, True, NAMES,
                 neurons=neurons)
  kernel = lambda *a, **k: pallas_scan.selective_scan(*a, **k, backend=backend, interpret=True)
  check_against_sequential(kernel, args, dtype, True)


@pytest.mark.parametrize("width,block,folded", [
    (16, (64, 32), (4, 2)), pytest.param(8, (64, 64), (8, 8), marks=pytest.mark.slow)])
def test_triton_folds_whole_neurons_into_a_program(width, block, folded):
  """Narrow per-neuron memories run several neurons a program, each with its own parameters,
  B and C, read in place from (batch, neurons, L, E): values and gradients equal sequential."""
  args = _inputs(jax.random.key(width), 2, 21, width, 4, F32, True, NAMES, neurons=8)
  cfg = pallas_scan._Cfg("triton", 21, 4, True, True)
  view = pallas_scan._as_kernel_view(args, 1)
  cfg, _ = pallas_scan_triton.config(cfg, view, block=block)
  assert (cfg.fwd_block[:2], cfg.bwd_block[:2]) == ((folded[0], width), (folded[1], width))
  check_against_sequential(
      lambda *a, **k: pallas_scan.selective_scan(*a, **k, backend="triton", interpret=True,
                                                 chunk=4, block=block), args, F32, True)


def _lowered_kernels(backend, length, neurons):
  """Line counts of the forward and backward kernels lowered for CUDA (bf16, softplus, every
  optional input, gradients w.r.t. all): the default INN's memories (16 rows x `neurons`
  neurons, 16 channels each, own parameters) or, neurons=None, the paper code's (512 rows,
  512 shared channels)."""
  sd = jax.ShapeDtypeStruct
  lead, own, width = ((16, neurons), (neurons,), 16) if neurons else ((512,), (), 512)
  state = 16
  ble, bls = sd((*lead, length, width), BF16), sd((*lead, length, state), BF16)
  shapes = dict(u=ble, delta=ble, A=sd((*own, width, state), F32), B=bls, C=bls,
                D=sd((*own, width), F32), z=ble, delta_bias=sd((*own, width), F32),
                h0=sd((*lead, width, state), F32))

  def loss(*vals):
    y, h = pallas_scan.selective_scan(**dict(zip(shapes, vals)), delta_softplus=True,
                                      return_state=True, backend=backend, interpret=False)
    return jnp.sum(y.astype(F32)) + jnp.sum(h)

  _, kernels = _lower_for_cuda(jax.value_and_grad(loss, argnums=tuple(range(len(shapes)))),
                               *shapes.values())
  assert len(kernels) == 2, sorted(kernels)
  return {name: len(text.splitlines()) for name, text in kernels.items()}


@pytest.mark.filterwarnings("ignore:The Pallas Triton backend is deprecated")
@pytest.mark.parametrize("backend", pallas_scan.BACKENDS)
@pytest.mark.parametrize("neurons", [32, None], ids=["default_form", "paper_code"])
def test_program_size_does_not_grow_with_a_partial_chunk(backend, neurons):
  """A length that is not a multiple of the chunk (300 = 18 x 16 + 12) lowers to programs at
  most 1.15x those of a multiple (288): the last chunk is masked, not unrolled a second time."""
  whole, partial = (_lowered_kernels(backend, length, neurons) for length in (288, 300))
  for name in whole:
    assert partial[name] <= 1.15 * whole[name], (name, whole[name], partial[name])


def _primitives(closed_jaxpr):
  """Counts of the primitives in a jaxpr and every jaxpr nested in it (calls, custom rules),
  kernel bodies excepted: what XLA runs around the kernels."""
  counts = {}

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      counts[eqn.primitive.name] = counts.get(eqn.primitive.name, 0) + 1
      if eqn.primitive.name == "pallas_call":
        continue
      for value in eqn.params.values():
        for sub in value if isinstance(value, (tuple, list)) else (value,):
          if isinstance(sub, jax.extend.core.ClosedJaxpr):
            walk(sub.jaxpr)
          elif isinstance(sub, jax.extend.core.Jaxpr):
            walk(sub)

  walk(closed_jaxpr.jaxpr)
  return counts


def test_default_form_memories_reach_the_kernel_without_transpose_or_pad():
  """The default INN's memories (paper size: 32 neurons of 16 channels, each its own A, D, dt
  bias) as the Mamba block calls the scan: forward and backward are one kernel call each over
  all neurons, with no transpose, pad or slice of any operand around them (no vmap over the
  neurons, no padding to a block width); and the whole layer, forward and backward, has no
  more transposes with the kernel than with the associative scan, nor more pads and slices than
  with the sequential one (each adds none of these of its own: the rest are the layer's einsums'
  and its convolution's)."""
  from flax import nnx
  from inn_jax.models import inn
  args = _inputs(jax.random.key(0), 2, 8, 16, 16, BF16, True, NAMES, neurons=32)
  names = sorted(args)

  def loss(*vals):
    y, h = scan.selective_scan(**dict(zip(names, vals)), delta_softplus=True,
                               return_state=True, method="pallas")
    return jnp.sum(y.astype(F32)) + jnp.sum(h)

  counts = _primitives(jax.make_jaxpr(jax.grad(loss, argnums=tuple(range(len(names)))))(
      *[args[n] for n in names]))
  assert counts["pallas_call"] == 2, counts
  assert not {"transpose", "pad", "slice", "dynamic_slice", "gather"} & set(counts), counts

  def layer_counts(method):
    config = inn.INNConfig(n_layers=1)
    config = config.replace(memory=config.memory.replace(scan_method=method))
    graphdef, params, rest = nnx.split(inn.NeuronLayer(config, rngs=nnx.Rngs(0)), nnx.Param, ...)
    def layer_loss(params, h):
      out, _ = nnx.merge(graphdef, params, rest)(h, deterministic=True)
      return jnp.sum(out)
    return _primitives(jax.make_jaxpr(jax.grad(layer_loss, argnums=(0, 1)))(
        params, jnp.zeros((2, 32, 8, 256))))

  kernel, associative, sequential = (layer_counts(m) for m in ("pallas", "associative",
                                                                 "sequential"))
  assert kernel["pallas_call"] == 2
  assert kernel["transpose"] == associative["transpose"], (kernel, associative)
  assert (kernel["pad"], kernel["slice"]) == (sequential["pad"], sequential["slice"]), (
      kernel, sequential)


def _gpu_case(dtype, backend, neurons=None):
  """The kernel on the GPU against the sequential scan: 4 rows of 256 shared channels, or with
  neurons, 4 x `neurons` rows of 16 channels each with their own parameters (the default INN's
  memories); L 300, not a multiple of either backend's chunk."""
  width = 256 if neurons is None else 16
  args = _inputs(jax.random.key(3), 4, 300, width, 16, dtype, True, NAMES, neurons=neurons)
  key = jax.random.key(4)
  got = _vjp(pallas_scan.selective_scan, args, key, delta_softplus=True, backend=backend)
  want = _vjp(scan.selective_scan, args, key, method="sequential", delta_softplus=True)
  tol = F32_TOL * 10 if dtype == F32 else BF16_TOL  # GPU exp/log1p differ from XLA's by ulps.
  _trees_close(got, want, tol)  # ((y, final state), grads) of the kernel against sequential.


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [F32, BF16])
def test_gpu_kernel_matches_sequential(dtype):
  if not pallas_scan.is_supported():
    pytest.skip("needs an NVIDIA GPU with compute capability >= 8.0")
  _gpu_case(dtype, backend="triton")


@pytest.mark.gpu
def test_gpu_kernel_runs_narrow_neurons_folded():
  """The default INN's memories on the backend method="pallas" picks for them (Triton, folded:
  whole neurons a program) on any supported GPU."""
  if not pallas_scan.is_supported():
    pytest.skip("needs an NVIDIA GPU with compute capability >= 8.0")
  assert pallas_scan.backend_for(16) == "triton"
  _gpu_case(BF16, backend=None, neurons=32)
