"""Times every selective-scan method on one GPU against its floor and writes JSON (see
README_gpu_scan.md).

  python benchmarks/gpu_scan.py                 # one GPU, about 3 minutes (--budget_s)
  python benchmarks/gpu_scan.py --tiny          # CPU smoke run: tiny shapes, Pallas interpret mode

The fused kernel is timed per Pallas backend: pallas_mosaic (Mosaic GPU, sm_90+) and pallas_triton
(Triton, sm_80+); a backend the GPU lacks is recorded as an error. `pallas` is what
method="pallas" picks for the shape (pallas_scan.backend_for).

Sections, each with its own share of the time budget (SECTIONS; a section's unused time goes to
the later ones), in this order:
  scan             forward and forward + backward at the paper code's memory (512 rows, L 256,
                   E 512, shared parameters) and the default INN's (16 x 32 neurons, E 16 each,
                   per-neuron parameters); each with its floor.
  inn_train_step   tokens/s of the trainer's step of the paper-code INN (configs/text8.py:inn_paper)
                   and of the default INN (configs/text8.py:inn), batch 16 x 256, per method.
  long             the paper code's memory at L 2048 (64 rows).
  pallas_variants  kernel settings at the paper code's shape, to choose each backend's defaults.
A section's items start only while its share lasts (so the budget is overrun by at most the
item under way), and the JSON file is rewritten after every item.

Floors: the bytes a pass must move at least (every input read once, every output written once)
over the device's HBM peak, and the exponentials it must compute (one exp(dt A) per state element
and step; forward + backward: twice) over the device's exp rate (16 results per clock per SM on
sm_80 and sm_90, at the boost clock); the floor is the larger. `fraction_of_floor` is the floor
over the measured time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import pathlib
import platform
import sys
import time
import traceback

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from inn_jax.ops import pallas_scan, scan  # noqa: E402

METHODS = ("pallas_mosaic", "pallas_triton", "chunked", "associative", "sequential")
# The exp rate is SFU throughput: 16 a clock per SM (the SMs and clock: inn_jax.roofline.DEVICES).
EXPS_PER_CLOCK_PER_SM = 16
# (name, rows, neurons, length, channels, state): neurons > 1 means per-neuron parameters (the
# default INN's memory: batch 16 x 32 neurons of 16 channels); the paper code's is the batch 16
# x 32 copies of one shared memory folded into rows.
SHAPES = {"paper_L256": (512, 1, 256, 512, 16), "default_form_L256": (16, 32, 256, 16, 16),
          "paper_L2048": (64, 1, 2048, 512, 16)}
TINY_SHAPES = {"paper_L256": (2, 1, 16, 8, 4), "default_form_L256": (2, 4, 21, 4, 4),
               "paper_L2048": (2, 1, 40, 8, 4)}
# Share of the budget per section, and what each times.
SECTIONS = {"scan": 0.3, "inn_train_step": 0.45, "long": 0.08, "pallas_variants": 0.17}
SCAN_ITEMS = [("paper_L256", m) for m in ("pallas_mosaic", "pallas_triton", "associative",
                                           "chunked", "sequential")]
SCAN_ITEMS += [("default_form_L256", m) for m in ("pallas_triton", "pallas_mosaic",
                                                   "associative")]
TRAIN_ITEMS = [("default_form", "pallas"), ("default_form", "associative"),
               ("paper_form", "pallas"), ("paper_form", "associative")]
LONG_ITEMS = [("paper_L2048", m) for m in ("pallas", "chunked")]
# Kernel settings timed at the paper code's shape, per backend. Mosaic: chunk (steps per saved
# state and backward tile) and forward tile. Triton: chunk, and (forward, backward) channels a
# program (block) and warps. The defaults (pallas_scan_mosaic.py, pallas_scan_triton.py) are
# what the first of each backend's list repeats.
PALLAS_VARIANTS = [
    ("pallas_mosaic", dict(chunk=8)), ("pallas_mosaic", dict(chunk=16, tile=32)),
    ("pallas_mosaic", dict(chunk=4, tile=32)), ("pallas_mosaic", dict(chunk=8, tile=64)),
    ("pallas_triton", dict(chunk=16)), ("pallas_triton", dict(chunk=8)),
    ("pallas_triton", dict(chunk=32, block=(32, 16), num_warps=(4, 2))),
    ("pallas_triton", dict(block=(128, 64), num_warps=(8, 4))),
    ("pallas_triton", dict(block=(32, 16), num_warps=(2, 2)))]
BATCH, LENGTH = 16, 256


def device_table(kind: str) -> dict | None:
  """inn_jax.roofline's DEVICES entry for a jax device kind (None: not in the table)."""
  from inn_jax import roofline
  return roofline.device_of_kind(kind)


def scan_inputs(rows, neurons, length, width, state, dtype, key):
  """Mamba-like inputs: dt = softplus(delta + bias) mostly in [1e-3, 0.1], A = -(1..S); with
  neurons > 1, leading axes (rows, neurons) and one A, D, bias per neuron."""
  k = jax.random.split(key, 6)
  lead, own = ((rows, neurons), (neurons,)) if neurons > 1 else ((rows,), ())
  dt = jnp.exp(jax.random.uniform(k[0], (*own, width), minval=np.log(1e-3),
                                  maxval=np.log(0.1)))
  ble = (*lead, length, width)
  return dict(
      u=jax.random.normal(k[1], ble, dtype), delta=0.1 * jax.random.normal(k[2], ble, dtype),
      A=-jnp.broadcast_to(jnp.arange(1, state + 1, dtype=jnp.float32), (*own, width, state)),
      B=jax.random.normal(k[3], (*lead, length, state), dtype),
      C=jax.random.normal(k[4], (*lead, length, state), dtype), D=jnp.ones((*own, width)),
      z=jax.random.normal(k[5], ble, dtype), delta_bias=dt + jnp.log(-jnp.expm1(-dt)))


def nbytes(tree):
  return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))


def median_time(fn, args, reps):
  """(compile + first run seconds, median seconds of `reps` further runs)."""
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - start
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return first, float(np.median(times))


def floors(moved, exps, device):
  """{hbm_s, exp_s, floor_s}: the pass's least time on `device` (None: unknown device)."""
  if device is None:
    return dict(hbm_floor_s=None, exp_floor_s=None, floor_s=None)
  hbm = moved / device["hbm"]
  exp = exps / (EXPS_PER_CLOCK_PER_SM * device["sms"] * device["clock"])
  return dict(hbm_floor_s=hbm, exp_floor_s=exp, floor_s=max(hbm, exp))


def time_scan(scan_fn, args, reps, device):
  """Forward and forward + backward of scan_fn(args) -> y: times, bytes, floors."""
  fwd = jax.jit(scan_fn)
  y = jax.eval_shape(fwd, args)
  gy = jnp.ones(y.shape, y.dtype)
  fwd_bwd = jax.jit(lambda a, g: jax.vjp(scan_fn, a)[1](g))
  elements = args["u"].size * args["A"].shape[-1]  # One exp(dt A) per state element and step.
  forward = nbytes(args) + nbytes(y)
  backward = nbytes(args) + nbytes(gy) + nbytes(args)  # Inputs and dy read, grads written.
  result = dict(exps_per_pass=elements)
  passes = (("forward", fwd, (args,), forward, elements),
            ("forward_backward", fwd_bwd, (args, gy), forward + backward, 2 * elements))
  for name, fn, call_args, moved, exps in passes:
    first, seconds = median_time(fn, call_args, reps)
    floor = floors(moved, exps, device)
    result[name] = dict(ms=1e3 * seconds, compile_and_first_s=first, min_bytes=moved,
                        gbytes_per_s=moved / seconds / 1e9,
                        fraction_of_hbm_peak=(None if device is None
                                              else moved / seconds / device["hbm"]),
                        **floor, fraction_of_floor=(None if floor["floor_s"] is None
                                                    else floor["floor_s"] / seconds))
  return result


def scan_fn_for(method, **pallas_kw):
  """selective_scan(inputs) with one method; pallas_<backend> picks the Pallas backend, pallas
  lets the shape pick (pallas_scan.backend_for)."""
  def f(a):
    if method.startswith("pallas"):
      backend = method[7:] or None
      return pallas_scan.selective_scan(**a, delta_softplus=True, backend=backend, **pallas_kw)
    return scan.selective_scan(**a, delta_softplus=True, method=method)
  return f


@contextlib.contextmanager
def pallas_backend(method):
  """Within: scan's method="pallas" (the models' path) runs method's Pallas backend (pallas:
  the per-shape choice, unchanged)."""
  if not method.startswith("pallas_"):
    yield method
    return
  saved = pallas_scan.backend_for
  pallas_scan.backend_for = lambda width: method[7:]
  try:
    yield "pallas"
  finally:
    pallas_scan.backend_for = saved


def model_tokens_per_s(form, method, dtype, tiny, reps):
  """Training-step tokens/s of one INN form, batch 16 x 256: "paper_form", the paper's code
  (configs/text8.py:inn_paper, 4.2M parameters: one shared memory 512 wide), or "default_form",
  ours (configs/text8.py:inn: 32 neurons each its own memory 16 wide); with one scan method.
  The step is the trainer's (inn_jax.train.step.build, as inn_jax.bench builds it: AdamW with
  the config's schedule, dropout, the finite check), one batch (train.microbatches=1)."""
  from inn_jax import bench
  from inn_jax.models import count_params
  from inn_jax.train import loop
  batch, length = (2, 16) if tiny else (BATCH, LENGTH)
  c = bench.job_config("inn", "paper", batch, length, jnp.dtype(dtype).name, method,
                       microbatches=1, inn_form="paper" if form == "paper_form" else "default")
  if tiny:
    c.model.update(d_model=16, n_layers=1, n_neurons=2, n_heads=2)
  c.mesh.data = 1
  p = bench.train_parts(c)
  compiled = loop.compile_train_step(p.make_step(1), p.state, p.shape, p.mesh,
                                     p.compiler_options)
  x_BL, y_BL = p.random_batch()
  state = [p.state]

  def step():  # The state is donated: each call steps from the last one's.
    state[0], metrics = compiled(state[0], x_BL, y_BL)
    return metrics["loss"]

  with jax.set_mesh(p.mesh):
    first, seconds = median_time(step, (), reps)
  return dict(form=form, parameters=count_params(p.model), batch=batch, length=length,
              step="the trainer's (inn_jax.train.step.build), train.microbatches=1",
              step_ms=1e3 * seconds, compile_and_first_s=first,
              tokens_per_s=batch * length / seconds)


def saved_state_bytes(method, shape, **kw):
  """HBM bytes of the Pallas forward's saved chunk states (written once, read once by the
  backward; not in min_bytes, which counts inputs and outputs only)."""
  if not method.startswith("pallas"):
    return None
  rows, neurons, length, width, state = shape
  backend = method[7:] or pallas_scan.backend_for(width)
  chunk = kw.get("chunk") or pallas_scan._backend_module(backend).DEFAULT_CHUNK
  padded_width = -(-width // 128) * 128 if backend == "mosaic" else width
  return 2 * rows * neurons * math.ceil(length / chunk) * padded_width * state * 4


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tiny", action="store_true", help="tiny shapes (CPU, interpret mode)")
  parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
  parser.add_argument("--reps", type=int, default=None, help="timed runs per item")
  parser.add_argument("--budget_s", type=float, default=180.0,
                      help="the whole run's time; each section gets its share (SECTIONS)")
  parser.add_argument("--out", default=None, help="JSON path")
  flags = parser.parse_args(argv)
  reps = flags.reps or (2 if flags.tiny else 5)
  default_out = f"benchmarks/results/gpu_scan{'_tiny' if flags.tiny else ''}.json"
  out = pathlib.Path(flags.out or default_out)
  out.parent.mkdir(parents=True, exist_ok=True)
  kind = jax.devices()[0].device_kind
  device = device_table(kind)
  report = dict(
      device=kind, backend=jax.default_backend(), jax=jax.__version__,
      python=platform.python_version(), dtype=flags.dtype, tiny=flags.tiny, reps=reps,
      pallas_backends=list(pallas_scan.available_backends()),
      pallas_interpret=jax.default_backend() != "gpu", device_table=device,
      exps_per_clock_per_sm=EXPS_PER_CLOCK_PER_SM, budget_s=flags.budget_s,
      bytes_model=("forward: inputs + y; forward_backward: forward + inputs + dy + grads "
                   "(each array moved once: a lower bound, so gbytes_per_s is effective)"),
      exps_model=("one exp(dt A) per state element and step a pass (forward + backward: two)"),
      sections={}, scan={}, inn_train_step={}, long={}, pallas_variants={}, skipped=[])
  start = time.perf_counter()
  dtype = jnp.dtype(flags.dtype)
  shapes = TINY_SHAPES if flags.tiny else SHAPES
  inputs = {}

  def args_for(name):
    if name not in inputs:
      inputs.clear()  # One shape's inputs on the device at a time.
      inputs[name] = scan_inputs(*shapes[name], dtype, jax.random.key(0))
    return inputs[name]

  def run_section(section, items, fn):
    """Runs items while the section's share of what is left of the budget lasts (what an earlier
    section left unused goes to the later ones)."""
    began = time.perf_counter()
    later = list(SECTIONS)[list(SECTIONS).index(section):]
    left = flags.budget_s - (began - start)
    budget = left * SECTIONS[section] / sum(SECTIONS[s] for s in later)
    for key, *item in items:
      if time.perf_counter() - began > budget:
        report["skipped"].append(f"{section}/{key}: its share of the budget ({budget:.0f} s)")
        continue
      try:
        report[section][key] = fn(*item)
      except Exception as e:  # An out-of-memory method must not lose the other figures.
        report[section][key] = dict(error=f"{type(e).__name__}: {str(e)[:500]}")
        traceback.print_exc()
      print(f"{section}/{key}: {json.dumps(report[section][key])}", flush=True)
      report["elapsed_s"] = time.perf_counter() - start
      out.write_text(json.dumps(report, indent=1))
    report["sections"][section] = dict(budget_s=budget, seconds=time.perf_counter() - began)
    out.write_text(json.dumps(report, indent=1))

  def scan_item(shape, method, **kw):
    return dict(shape=dict(zip(("rows", "neurons", "length", "channels", "state"),
                               shapes[shape])),
                saved_state_bytes=saved_state_bytes(method, shapes[shape], **kw),
                **time_scan(scan_fn_for(method, **kw), args_for(shape), reps, device))

  def train_item(form, method):
    inputs.clear()
    with pallas_backend(method) as scan_method:
      return model_tokens_per_s(form, scan_method, dtype, flags.tiny, reps)

  run_section("scan", [(f"{s}/{m}", s, m) for s, m in SCAN_ITEMS], scan_item)
  run_section("inn_train_step", [(f"{f}/{m}", f, m) for f, m in TRAIN_ITEMS], train_item)
  run_section("long", [(f"{s}/{m}", s, m) for s, m in LONG_ITEMS], scan_item)
  label = lambda kw: "/".join(f"{k}={v}" for k, v in kw.items())
  run_section("pallas_variants",
              [(f"paper_L256/{m}/{label(kw)}", m, kw) for m, kw in PALLAS_VARIANTS],
              lambda m, kw: scan_item("paper_L256", m, **kw))
  report["elapsed_s"] = time.perf_counter() - start
  out.write_text(json.dumps(report, indent=1))
  print(f"wrote {out} in {report['elapsed_s']:.0f} s")


if __name__ == "__main__":
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  main()
