"""The fused Pallas scan's entry and Triton kernel against the sequential scan: interpret mode on
CPU, CUDA lowering, GPU (the Mosaic GPU kernel: test_pallas_scan_mosaic.py)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inn_jax.ops import pallas_scan, scan
from tests.trees import assert_trees_close

F32, BF16 = jnp.float32, jnp.bfloat16
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "h0")
# Both sides compute in float32 from the same inputs; only the summation order differs.
F32_TOL = 1e-5
# With bf16 inputs both sides still compute in float32 from identical bf16 values, then round
# y and the bf16 gradients to bf16: an f32 reordering can flip that rounding by one bf16 ulp,
# 2**-8 relative, so allow two.
BF16_TOL = 2.0**-7


def _inputs(key, batch, length, width, state, dtype, softplus, optional):
  """Random inputs; u, delta, B, C, z in dtype, the parameters and h0 in float32."""
  k = jax.random.split(key, 9)
  # Without softplus dt = delta + bias must stay positive, or exp(dt * A) grows without bound.
  lo, hi = (-2.0, 1.0) if softplus else (0.0, 0.5)
  args = dict(
      u=jax.random.normal(k[0], (batch, length, width)),
      delta=jax.random.uniform(k[1], (batch, length, width), minval=lo, maxval=hi),
      A=-jnp.exp(jax.random.normal(k[2], (width, state))),
      B=jax.random.normal(k[3], (batch, length, state)),
      C=jax.random.normal(k[4], (batch, length, state)),
      D=jax.random.normal(k[5], (width,)),
      z=jax.random.normal(k[6], (batch, length, width)),
      delta_bias=jax.random.uniform(k[7], (width,), maxval=0.3),
      h0=jax.random.normal(k[8], (batch, width, state)))
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


@pytest.mark.parametrize("bad", [dict(block_e=(64,)), dict(num_warps=(4, 0)),
                                 dict(chunk=0), dict(A=jnp.zeros((5, 3))),
                                 dict(backend="cuda"), dict(tile=16)])
def test_bad_arguments_raise(bad):
  args = _inputs(jax.random.key(0), 1, 4, 6, 3, F32, False, ("u", "delta", "A", "B", "C"))
  args.update({k: v for k, v in bad.items() if k in args})
  opts = {k: v for k, v in bad.items() if k not in args}
  with pytest.raises(ValueError, match="block_e|num_warps|chunk|A must be|backend|tile"):
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


def _gpu_case(dtype, backend):
  args = _inputs(jax.random.key(3), 4, 300, 256, 16, dtype, True, NAMES)
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
