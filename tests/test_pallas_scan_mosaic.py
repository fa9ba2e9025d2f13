"""The Mosaic GPU kernel against the sequential scan: Mosaic GPU interpret mode on CPU (a simulator
of its SMEM, TMA copies and barriers), ahead-of-time lowering for an H200, and the GPU itself."""

import re

import jax
import jax.numpy as jnp
import pytest
from jax.experimental.pallas import mosaic_gpu as plgpu

from inn_jax.ops import pallas_scan, scan
from tests.test_pallas_scan import (F32_TOL, NAMES, _gpu_case, _inputs, _lower_for_cuda,
                                    _trees_close, _vjp, check_against_sequential,
                                    check_population_against_sequential,
                                    check_vmap_against_sequential)

F32, BF16 = jnp.float32, jnp.bfloat16
BASE = ("u", "delta", "A", "B", "C")

CASES = [  # (dtype, batch, length, width, state, softplus, optional inputs, chunk, tile)
    # Everything; channels, state and length padded (128, 8, tile).
    (F32, 2, 13, 6, 3, True, NAMES, 4, None),
    # Two channel blocks, five tiles (both SMEM slots reused), two saved states per tile.
    (F32, 1, 37, 136, 16, False, BASE, 4, 8),
    # No padded steps (no masking), z and h0 only.
    (F32, 1, 16, 8, 5, True, (*BASE, "z", "h0"), 4, 8),
    (BF16, 2, 13, 6, 3, True, NAMES, 4, None),
    (BF16, 1, 37, 40, 16, True, (*BASE, "D", "z"), 8, 16),
]


def _mosaic(**kw):
  return lambda *a, **k: pallas_scan.selective_scan(*a, **k, backend="mosaic", **kw)


@pytest.mark.parametrize("dtype,batch,length,width,state,softplus,optional,chunk,tile", CASES)
def test_interpret_matches_sequential(dtype, batch, length, width, state, softplus, optional,
                                      chunk, tile):
  args = _inputs(jax.random.key(length * width), batch, length, width, state, dtype, softplus,
                 optional)
  check_against_sequential(_mosaic(interpret=True, chunk=chunk, tile=tile), args, dtype, softplus)


def test_no_races_between_copies_and_compute():
  """The simulator's happens-before race detector over the double-buffered pipeline: a missing
  barrier wait, or a slot refilled while still read, raises."""
  args = _inputs(jax.random.key(5), 1, 20, 8, 4, F32, True, NAMES)
  params = plgpu.InterpretGPUParams(detect_races=True)
  with plgpu.force_gpu_interpret_mode(params):
    (y, h), grads = _vjp(_mosaic(chunk=2, tile=4), args, jax.random.key(6), delta_softplus=True)
  (y_ref, _), grads_ref = _vjp(scan.selective_scan, args, jax.random.key(6), method="sequential",
                               delta_softplus=True)
  _trees_close((y, grads["B"]), (y_ref, grads_ref["B"]), F32_TOL)  # y and the grad of B.


def test_vmap_over_leading_axis():
  check_vmap_against_sequential(_mosaic(interpret=True, chunk=4))


def test_population_with_per_neuron_parameters():
  check_population_against_sequential(_mosaic(interpret=True, chunk=4))


@pytest.mark.parametrize("bad", [dict(tile=6), dict(block=(64, 32)), dict(num_warps=(4, 4)),
                                 dict(chunk=64, state=64)])
def test_bad_arguments_raise(bad):
  bad = dict(bad)
  state = bad.pop("state", 3)
  args = _inputs(jax.random.key(0), 1, 4, 6, state, F32, False, BASE)
  with pytest.raises(ValueError, match="tile|triton|shared memory"):
    _mosaic(chunk=bad.pop("chunk", 4))(**args, **bad)


@pytest.mark.parametrize("dtype,batch,length,width,state,optional", [
    (BF16, 512, 256, 512, 16, NAMES), (F32, 3, 37, 40, 3, NAMES), (F32, 2, 16, 128, 8, BASE)])
def test_lowers_for_cuda(dtype, batch, length, width, state, optional):
  sd = jax.ShapeDtypeStruct
  ble, bls = sd((batch, length, width), dtype), sd((batch, length, state), dtype)
  shapes = dict(u=ble, delta=ble, A=sd((width, state), F32), B=bls, C=bls, D=sd((width,), F32),
                z=ble, delta_bias=sd((width,), F32), h0=sd((batch, width, state), F32))
  names = [n for n in shapes if n in optional]

  def loss(*vals):
    y, h = pallas_scan.selective_scan(**dict(zip(names, vals)), delta_softplus=True,
                                      return_state=True, backend="mosaic", interpret=False)
    return jnp.sum(y.astype(F32)) + jnp.sum(h)

  hlo, kernels = _lower_for_cuda(jax.value_and_grad(loss, argnums=tuple(range(len(names)))),
                                 *[shapes[n] for n in names])
  assert sorted(kernels) == ["mosaic_bwd_kernel", "mosaic_fwd_kernel"]
  for text in kernels.values():  # TMA loads and stores (dst.src), mbarrier waits, in a loop.
    for op in (r"cp\.async\.bulk\.tensor\S*shared\S*global", r"mbarrier\.try_wait",
               r"cp\.async\.bulk\.tensor\S*global\S*shared", r"scf\.for"):
      assert re.search(op, text), op
  # The per-step state (batch, length, channels, state) never reaches HBM.
  assert not re.search(rf"tensor<{batch}x{length}x{width}x\d+x", hlo)
  assert len(re.findall(r"custom_call @mosaic_gpu\w*\(", hlo)) == 2


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [F32, BF16])
def test_gpu_kernel_matches_sequential(dtype):
  if pallas_scan.default_backend() != "mosaic":
    pytest.skip("needs an NVIDIA GPU with compute capability >= 9.0")
  _gpu_case(dtype, backend="mosaic")


@pytest.mark.gpu
def test_gpu_kernel_runs_narrow_neurons_padded():
  """The default INN's memories forced onto Mosaic (each neuron's 16 channels padded to 128)."""
  if pallas_scan.default_backend() != "mosaic":
    pytest.skip("needs an NVIDIA GPU with compute capability >= 9.0")
  _gpu_case(BF16, backend="mosaic", neurons=32)
