"""inn_jax.roofline: FLOPs and bytes by class against hand counts, the bound against a made-up
device, a tiny INN's train step against inn_jax.train.flops and its state, and the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from jax.experimental import pallas as pl

from inn_jax import roofline
from inn_jax.ops import scan as scan_ops
from inn_jax.train import flops, step
from tests import tiny as testing
from tests import train_cli

F32 = 4  # bytes


def _count(fn, *args) -> roofline.Counts:
  return roofline.count(jax.make_jaxpr(fn)(*args))


def test_matmul_exp_transpose_by_hand():
  B, D, F = 4, 8, 16
  x, w = jnp.ones((B, D)), jnp.ones((D, F))
  c = _count(lambda x, w: jnp.exp(x @ w).T, x, w)
  assert dict(c.flops) == {"matmul": 2 * B * D * F, "elementwise": B * F}
  assert dict(c.bytes) == {"matmul_operands": (B * D + D * F + B * F) * F32,
                           "elementwise": 2 * B * F * F32,  # exp reads and writes B x F.
                           "transposes_and_copies": 2 * B * F * F32}
  assert dict(c.matmul_by_dtype) == {"float32": 2 * B * D * F}
  assert c.transcendental == B * F


def test_a_loop_counts_its_body_times_its_length():
  T, D = 7, 5

  def body(c_D, x_D):
    c_D = c_D * x_D + x_D  # mul and add: 2 D FLOPs; each reads 2 D and writes D.
    return c_D, c_D

  c = _count(lambda c, xs: jax.lax.scan(body, c, xs), jnp.ones(D), jnp.ones((T, D)))
  assert dict(c.flops) == {"elementwise": T * 2 * D}
  assert dict(c.bytes) == {"elementwise": T * 2 * 3 * D * F32}


def test_work_in_the_selective_scan_scope_is_scan():
  """A loop under named_scope("selective_scan"): its FLOPs are scan, its bytes its operands and
  results once (scan_io), not its body's per step; a matmul there is scan work too."""
  T, D = 6, 3

  def fn(c_D, xs_TD, w_DD):
    with jax.named_scope("selective_scan"):
      c_D, ys_TD = jax.lax.scan(lambda c, x: (c * x + x, c), c_D, xs_TD)
      return ys_TD @ w_DD

  c = _count(fn, jnp.ones(D), jnp.ones((T, D)), jnp.ones((D, D)))
  assert dict(c.flops) == {"scan": T * 2 * D + 2 * T * D * D}
  assert dict(c.scan_detail) == {"elementwise": T * 2 * D, "dot_general": 2 * T * D * D}
  # The loop reads c and xs and writes c and ys once; the matmul's operands as any matmul's.
  assert c.bytes["scan_io"] == (D + T * D + D + T * D) * F32
  assert c.bytes["matmul_operands"] == (T * D + D * D + T * D) * F32
  assert "elementwise" not in c.bytes and not c.matmul_by_dtype
  assert dict(c.scan_scope_bytes) == {k: c.bytes[k] for k in ("scan_io", "matmul_operands")}


def test_the_sequential_scan_and_its_gradient_split_their_matmuls_from_the_models():
  """selective_scan's own scope, forward and backward (transpose(jvp(selective_scan))): its
  einsum y = C . h is scan work, so matmul + the scan's dot_generals = flops.matmul_flops."""
  M, L, E, S = 2, 8, 4, 3
  ones = lambda *shape: jnp.ones(shape) * 0.1

  def loss(u, w):
    y = scan_ops.selective_scan(u @ w, ones(M, L, E), -ones(E, S), ones(M, L, S),
                                ones(M, L, S), method="sequential")
    return jnp.sum(y @ w)

  jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(ones(M, L, E), ones(E, E))
  c = roofline.count(jaxpr)
  assert c.flops["matmul"] == 3 * 2 * (2 * M * L * E * E)  # Two matmuls, each x3 in training.
  assert c.scan_detail["dot_general"] > 0 and c.bytes["scan_io"] > 0
  assert c.flops["matmul"] + c.scan_detail["dot_general"] == flops.matmul_flops(jaxpr.jaxpr)


def test_broadcasts_reshapes_and_slices():
  """A broadcast an add reads is fused (the add pays for the broadcast shape); one a matmul
  reads is a buffer. Reshapes are free; a slice moves what it keeps."""
  B, D = 4, 8
  b_D, x_BD, w_BD = jnp.ones(D), jnp.ones((B, D)), jnp.ones((B, D))
  fused = _count(lambda x, b: x + jnp.broadcast_to(b, (B, D)), x_BD, b_D)
  assert dict(fused.bytes) == {"elementwise": 3 * B * D * F32}
  # x + b: b becomes (1, D), a reshape, and the add reads it as it is (size-1 axes broadcast).
  assert dict(_count(lambda x, b: x + b, x_BD, b_D).bytes) == {
      "elementwise": (B * D + D + B * D) * F32}
  into_matmul = _count(lambda b, w: jnp.broadcast_to(b, (B, D)).T @ w, b_D, w_BD)
  assert into_matmul.bytes["transposes_and_copies"] == (
      (D + B * D) * F32  # The broadcast, materialised.
      + 2 * B * D * F32)  # Its transpose.
  assert not _count(lambda x: x.reshape(D, B), x_BD).bytes
  assert dict(_count(lambda x: x[1:3], x_BD).bytes) == {
      "transposes_and_copies": 2 * 2 * D * F32}


def _double_exp_kernel(x_ref, o_ref):
  o_ref[...] = jnp.exp(x_ref[...]) * 2.0


def test_a_fused_kernel_in_the_scan_scope_counts_its_body_per_program():
  R, W, block = 8, 128, 2
  call = pl.pallas_call(_double_exp_kernel, grid=(R // block,),
                        in_specs=[pl.BlockSpec((block, W), lambda i: (i, 0))],
                        out_specs=pl.BlockSpec((block, W), lambda i: (i, 0)),
                        out_shape=jax.ShapeDtypeStruct((R, W), jnp.float32), interpret=True)

  def fn(x):
    with jax.named_scope("selective_scan"):
      return call(x)

  c = _count(fn, jnp.ones((R, W)))
  # 4 programs, each exp and mul over its 2 x 128 block: the whole array twice.
  assert dict(c.flops) == {"scan": 2 * R * W}
  assert dict(c.scan_detail) == {"kernel": 2 * R * W}
  assert dict(c.bytes) == {"scan_io": 2 * R * W * F32}  # Its operand and result, once.
  assert dict(c.kernels) == {"_double_exp_kernel": 1}

  declared = pl.pallas_call(_double_exp_kernel, out_shape=jax.ShapeDtypeStruct((R, W),
                                                                                jnp.float32),
                            cost_estimate=pl.CostEstimate(flops=100, transcendentals=7,
                                                          bytes_accessed=0), interpret=True)
  assert dict(_count(lambda x: declared(x), jnp.ones((R, W))).flops) == {"elementwise": 107}


MADE_UP = dict(name="made-up", matmul={"bfloat16": 1e12, "float32": 5e11}, vector=1e11,
               hbm=1e11)


def test_bound_by_hand():
  flops_by_class = {"matmul": 3e12, "elementwise": 1e11, "scan": 1e11}
  by_dtype = {"bfloat16": 2e12, "float32": 1e12}
  # Compute: 2e12 / 1e12 + 1e12 / 5e11 + 2e11 / 1e11 = 2 + 2 + 2 = 6 s; memory 3e11 / 1e11 = 3 s.
  got = roofline.bound(flops_by_class, by_dtype, 3e11, MADE_UP, tokens=600)
  assert got["step_s"] == pytest.approx(6) and got["tokens_per_s"] == pytest.approx(100)
  assert got["binds"] == "compute (matmul units)"  # 4 s of matmuls, 2 s of vector work.
  assert got["matmul_s"] == pytest.approx(4) and got["vector_s"] == pytest.approx(2)
  assert got["arithmetic_intensity"] == pytest.approx(3.2e12 / 3e11)
  # 1.2e12 bytes: 12 s of memory traffic binds.
  got = roofline.bound(flops_by_class, by_dtype, 1.2e12, MADE_UP, tokens=600)
  assert got["tokens_per_s"] == pytest.approx(50) and got["binds"] == "memory (HBM bandwidth)"


def test_bound_names_the_larger_compute_part():
  # 1 s of matmuls, 5 s of the scan's vector work, 0.1 s of memory traffic.
  got = roofline.bound({"matmul": 1e12, "elementwise": 0, "scan": 5e11}, {"bfloat16": 1e12},
                       1e10, MADE_UP, tokens=90)
  assert got["binds"] == "compute (vector units)" and got["tokens_per_s"] == pytest.approx(15)


def test_as_traced_and_fused_bounds_pick_their_bytes():
  counts = roofline.Counts()
  counts.flops.update(matmul=1e9)
  counts.matmul_by_dtype.update(bfloat16=1e9)
  counts.bytes.update(matmul_operands=1e11, transposes_and_copies=2e11, elementwise=4e11,
                      scan_io=8e10)
  got = roofline.bounds(counts, int(2e10), MADE_UP, tokens=1000)
  assert got["as_traced"]["bytes"] == 1e11 + 2e11 + 4e11 + 8e10  # Every op's bytes.
  assert got["fused"]["bytes"] == 1e11 + 8e10 + 2e10  # Matmuls, the scan, the state.
  assert got["fused"]["tokens_per_s"] == pytest.approx(1000 / 2.0)  # 2e11 bytes at 1e11/s.


@pytest.fixture(scope="module")
def tiny_inn():
  """The quick start's INN at tests/tiny.py's sizes (2 layers, 4 neurons of width 16), 2 x 16,
  built once through step.build as the trainer builds it."""
  own = {"device": "H200", "batch": "2", "seq": "16", "scan_method": "pallas"}
  device = roofline.device_entry(own)
  c = roofline.configure(["--config", "quickstart"] + _TINY_FLAGS, own, device)
  return c, step.build(c, 27), device


_TINY_FLAGS = [f"--config.model.{k}={v}" for k, v in testing.TINY_SIZES.items()
               if k in ("d_model", "n_layers", "n_neurons", "n_heads", "d_state")]


def test_tiny_inn_matmuls_and_state_against_independent_counts(tiny_inn):
  c, parts, device = tiny_inn
  jaxpr, state, _ = roofline.trace_train_step(c, 27, device, parts=parts)
  counts = roofline.count(jaxpr)
  # The fused kernel has no matmuls: every dot_general is the model's.
  assert counts.flops["matmul"] == flops.matmul_flops(jaxpr.jaxpr) > 0
  assert sum(counts.matmul_by_dtype.values()) == counts.flops["matmul"]
  assert set(counts.matmul_by_module) == {"layer_*/memory", "layer_*/communication", "head"}
  assert dict(counts.kernels) == {"fwd_kernel": 2, "bwd_kernel": 2}  # Each layer's, Triton.
  assert counts.flops["scan"] > 0 and counts.bytes["scan_io"] > 0 and not counts.uncounted
  # params, and AdamW's two moments, all float32, each read and written once; plus 11 int32 /
  # float32 scalars: the step, AdamW's count, inject_hyperparams' count, its 6 hyperparameters
  # (b1, b2, eps, eps_root, learning_rate, weight_decay) and the 2 scheduled ones' counts.
  n_params = sum(x.size for x in jax.tree.leaves(nnx.state(parts.model, nnx.Param)))
  assert roofline.state_bytes(state) == 2 * (3 * n_params * F32 + 11 * 4)


def test_the_named_device_picks_the_pallas_backend(tiny_inn):
  """Memories 128 channels wide (shared, d_model 64): Hopper runs Mosaic, Ampere Triton."""
  pytest.importorskip("jax.experimental.pallas.mosaic_gpu")  # A JAX built with Mosaic GPU.
  c, _, _ = tiny_inn
  c = c.copy_and_resolve_references()
  c.model.update(neuron_params="shared", d_model=64, n_heads=2)
  parts = step.build(c, 27)
  kernels = {name: set(roofline.count(roofline.trace_train_step(
      c, 27, roofline.device_entry({"device": name}), parts=parts)[0]).kernels)
             for name in ("H200", "A100")}
  assert kernels == {"H200": {"mosaic_fwd_kernel", "mosaic_bwd_kernel"},
                     "A100": {"fwd_kernel", "bwd_kernel"}}


def test_cli_writes_the_report(tiny_inn, tmp_path, capsys):
  out = tmp_path / "r" / "tiny.json"
  got = roofline.main(["--config", "quickstart", *_TINY_FLAGS, "--device", "cpu",
                       "--peak_gflops", "100", "--bandwidth_gbs", "10", "--batch", "2",
                       "--seq", "16", "--out", str(out)])
  saved = json.loads(out.read_text())
  assert saved == json.loads(json.dumps(got))
  assert saved["scan_method"] == "blocked"  # "auto" on cpu; no kernels.
  assert saved["batch"] == 2 and saved["seq"] == 16 and saved["device"]["hbm"] == 1e10
  fused = saved["bounds"]["fused"]
  b = saved["bytes"]
  assert fused["bytes"] == b["matmul_operands"] + b["scan_io"] + b["params_and_optimizer"]
  f = saved["flops"]
  compute = f["matmul"] / 1e11 + (f["elementwise"] + f["scan"]) / 1e11
  assert fused["step_s"] == pytest.approx(max(compute, fused["bytes"] / 1e10))
  assert fused["tokens_per_s"] == pytest.approx(32 / fused["step_s"])
  text = capsys.readouterr().out
  assert "as_traced" in text and "fused" in text and f"wrote {out}" in text


@pytest.mark.parametrize("argv, fragment", [
    (["--device", "cpu", "--bandwidth_gbs", "10"], "--device cpu needs --peak_gflops"),
    (["--device", "H200", "--peak_gflops", "5"], "--peak_gflops 5: applies to --device cpu"),
    (["--device", "H200", "--batch", "0"], "--batch 0: must be a positive integer"),
    (["--device", "H200", "--scan_method", "fast"], "--scan_method fast: choose one of"),
    (["--device", "H200", "--config", "nope.py"], "--config nope.py: no such config file"),
])
def test_user_errors_are_one_line_before_any_tracing(argv, fragment, capsys, monkeypatch):
  def no_tracing(*args, **kwargs):
    raise AssertionError("traced")

  monkeypatch.setattr(roofline, "trace_train_step", no_tracing)
  argv = argv if "--config" in argv else ["--config", "quickstart", *argv]
  err = train_cli.exits_with_one_line(roofline.cli, argv, capsys)
  assert fragment in err


def test_an_unknown_device_exits_2_with_one_line():
  proc = subprocess.run([sys.executable, "-m", "inn_jax.roofline", "--config", "quickstart",
                         "--device", "H300"], capture_output=True, text=True,
                        env=train_cli.env(1), cwd=train_cli.REPO, timeout=120)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert proc.stderr.count("\n") == 1
  assert proc.stderr.startswith("error: --device H300: unknown device; choose one of ")
  assert "'H200'" in proc.stderr and "--peak_gflops" in proc.stderr
