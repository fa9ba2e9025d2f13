"""Times every selective-scan method on one GPU and writes JSON (see README_gpu_scan.md).

  python benchmarks/gpu_scan.py                 # one GPU, under 5 minutes
  python benchmarks/gpu_scan.py --tiny          # CPU smoke run: tiny shapes, Pallas interpret mode

The fused kernel is timed per Pallas backend: pallas_mosaic (Mosaic GPU, sm_90+) and pallas_triton
(Triton, sm_80+); a backend the GPU lacks is recorded as an error.

For each shape, method and pass (forward; forward + backward) it reports the median time, the
bytes the pass must move at least (every input read once, every output written once) and that
over the time, against the device's HBM peak. Then the INN's training-step tokens/s with each
method, when inn_jax.models provides build_model. A time budget skips what is left, so the run
always ends with a JSON file, rewritten after every measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import json
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
# Peak HBM bandwidth (bytes/s) by device-kind substring, from the vendors' data sheets (SXM).
PEAK_HBM = {"H200": 4.8e12, "H100": 3.35e12, "B200": 8.0e12, "A100": 2.0e12, "L40": 0.864e12,
            "L4": 0.3e12, "A10": 0.6e12}
# (name, batch, length, channels, state): the paper's batch 16 x 32 neurons folded, then a long
# sequence with the batch cut to 2 x 32 so that the associative scan's (B, L, E, S) tensors fit.
SHAPES = [("paper_L256", 512, 256, 512, 16), ("long_L2048", 64, 2048, 512, 16)]
TINY_SHAPES = [("tiny_L16", 2, 16, 8, 4), ("tiny_L40", 2, 40, 8, 4)]
# Kernel variants timed at the first shape, per backend. Mosaic: chunk (steps per saved state
# and backward tile) and forward tile. Triton: (block_e, num_warps) for (forward, backward).
PALLAS_VARIANTS = [
    ("pallas_mosaic", dict(chunk=4, tile=16)), ("pallas_mosaic", dict(chunk=8, tile=32)),
    ("pallas_mosaic", dict(chunk=16, tile=16)), ("pallas_mosaic", dict(chunk=8, tile=64)),
    ("pallas_triton", dict(block_e=(32, 16), num_warps=(2, 2))),
    ("pallas_triton", dict(block_e=(64, 32), num_warps=(4, 4))),
    ("pallas_triton", dict(block_e=(128, 64), num_warps=(8, 4))),
    ("pallas_triton", dict(block_e=(64, 32), num_warps=(8, 8)))]
VOCAB = 27  # text8's characters.


def scan_inputs(batch, length, width, state, dtype, key):
  """Mamba-like inputs: dt = softplus(delta + bias) mostly in [1e-3, 0.1], A = -(1..S)."""
  k = jax.random.split(key, 6)
  dt = jnp.exp(jax.random.uniform(k[0], (width,), minval=np.log(1e-3), maxval=np.log(0.1)))
  ble = (batch, length, width)
  return dict(
      u=jax.random.normal(k[1], ble, dtype), delta=0.1 * jax.random.normal(k[2], ble, dtype),
      A=-jnp.broadcast_to(jnp.arange(1, state + 1, dtype=jnp.float32), (width, state)),
      B=jax.random.normal(k[3], (batch, length, state), dtype),
      C=jax.random.normal(k[4], (batch, length, state), dtype), D=jnp.ones((width,)),
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


def time_scan(scan_fn, args, reps, peak):
  """Forward and forward + backward of scan_fn(args) -> y; times, bytes and bandwidth."""
  fwd = jax.jit(scan_fn)
  y = jax.eval_shape(fwd, args)
  gy = jnp.ones(y.shape, y.dtype)
  fwd_bwd = jax.jit(lambda a, g: jax.vjp(scan_fn, a)[1](g))
  result = {}
  forward = nbytes(args) + nbytes(y)
  backward = nbytes(args) + nbytes(gy) + nbytes(args)  # Inputs and dy read, grads written.
  passes = (("forward", fwd, (args,), forward),
            ("forward_backward", fwd_bwd, (args, gy), forward + backward))
  for name, fn, call_args, moved in passes:
    first, seconds = median_time(fn, call_args, reps)
    result[name] = dict(ms=1e3 * seconds, compile_and_first_s=first, min_bytes=moved,
                        gbytes_per_s=moved / seconds / 1e9,
                        fraction_of_peak=None if peak is None else moved / seconds / peak)
  return result


def scan_fn_for(method, **pallas_kw):
  """selective_scan(inputs) with one method; pallas_<backend> picks the Pallas backend."""
  def f(a):
    if method.startswith("pallas_"):
      return pallas_scan.selective_scan(**a, delta_softplus=True, backend=method[7:],
                                        **pallas_kw)
    return scan.selective_scan(**a, delta_softplus=True, method=method)
  return f


@contextlib.contextmanager
def pallas_backend(method):
  """Within: scan's method="pallas" (the models' path) runs method's Pallas backend."""
  if not method.startswith("pallas_"):
    yield method
    return
  saved = pallas_scan.default_backend
  pallas_scan.default_backend = lambda: method[7:]
  try:
    yield "pallas"
  finally:
    pallas_scan.default_backend = saved


def model_tokens_per_s(method, dtype, tiny, reps):
  """Training-step tokens/s of the paper's INN (batch 16, length 256) with one scan method."""
  try:
    from inn_jax.models import build_model, model_config
  except ImportError as e:
    return dict(skipped=f"inn_jax.models.build_model unavailable: {e}")
  import optax
  from flax import nnx
  size = (dict(d_model=16, n_layers=1, n_neurons=2, n_heads=2) if tiny else {})
  batch, length = (2, 16) if tiny else (16, 256)
  cfg = model_config("inn", scan_method=method, dtype=jnp.dtype(dtype).name, attn_dropout=0.0,
                     **size)
  graphdef, params, rest = nnx.split(build_model(cfg, VOCAB, nnx.Rngs(0)), nnx.Param, ...)
  opt = optax.adamw(4e-4)

  @jax.jit
  def step(params, opt_state, tokens_BL):
    def loss_fn(p):
      logits_BLV = nnx.merge(graphdef, p, rest)(tokens_BL[:, :-1])
      return optax.softmax_cross_entropy_with_integer_labels(
          logits_BLV.astype(jnp.float32), tokens_BL[:, 1:]).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  tokens_BL = jax.random.randint(jax.random.key(0), (batch, length + 1), 0, VOCAB)
  first, seconds = median_time(step, (params, opt.init(params), tokens_BL), reps)
  return dict(batch=batch, length=length, step_ms=1e3 * seconds, compile_and_first_s=first,
              tokens_per_s=batch * length / seconds)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tiny", action="store_true", help="tiny shapes (CPU, interpret mode)")
  parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
  parser.add_argument("--reps", type=int, default=None, help="timed runs per item")
  parser.add_argument("--budget_s", type=float, default=270.0,
                      help="skip what is left after this many seconds")
  parser.add_argument("--out", default=None, help="JSON path")
  flags = parser.parse_args(argv)
  reps = flags.reps or (2 if flags.tiny else 10)
  default_out = f"benchmarks/results/gpu_scan{'_tiny' if flags.tiny else ''}.json"
  out = pathlib.Path(flags.out or default_out)
  out.parent.mkdir(parents=True, exist_ok=True)
  device = jax.devices()[0]
  peak = next((v for k, v in PEAK_HBM.items() if k in device.device_kind), None)
  report = dict(
      device=device.device_kind, backend=jax.default_backend(), jax=jax.__version__,
      python=platform.python_version(), dtype=flags.dtype, tiny=flags.tiny, reps=reps,
      pallas_default_backend=pallas_scan.default_backend(),
      pallas_interpret=jax.default_backend() != "gpu",
      peak_hbm_bytes_per_s=peak,
      bytes_model=("forward: inputs + y; forward_backward: forward + inputs + dy + grads "
                   "(each array moved once: a lower bound, so gbytes_per_s is effective)"),
      scan={}, pallas_variants={}, inn_train_step={}, skipped=[])
  start = time.perf_counter()

  def run(section, key, fn):
    if time.perf_counter() - start > flags.budget_s:
      report["skipped"].append(f"{section}/{key}: time budget")
    else:
      try:
        report[section][key] = fn()
      except Exception as e:  # An out-of-memory method must not lose the other figures.
        report[section][key] = dict(error=f"{type(e).__name__}: {str(e)[:500]}")
        traceback.print_exc()
      print(f"{section}/{key}: {json.dumps(report[section][key])}", flush=True)
    report["elapsed_s"] = time.perf_counter() - start
    out.write_text(json.dumps(report, indent=1))

  dtype = jnp.dtype(flags.dtype)
  shapes = TINY_SHAPES if flags.tiny else SHAPES
  key = jax.random.key(0)
  for i, (name, *shape) in enumerate(shapes):
    args = scan_inputs(*shape, dtype, key)
    for method in METHODS:
      run("scan", f"{name}/{method}", lambda: dict(
          shape=dict(zip(("batch", "length", "channels", "state"), shape)),
          **time_scan(scan_fn_for(method), args, reps, peak)))
    if i == 0:  # The INN step right after the paper shape: the figure the issue asks first.
      for method in METHODS:
        def step_figures():
          with pallas_backend(method) as scan_method:
            return model_tokens_per_s(scan_method, dtype, flags.tiny, reps)
        run("inn_train_step", method, step_figures)
  name, *shape = shapes[0]
  args = scan_inputs(*shape, dtype, key)
  for method, kw in PALLAS_VARIANTS:
    label = "/".join(f"{k}={v}" for k, v in kw.items())
    run("pallas_variants", f"{name}/{method}/{label}",
        lambda: time_scan(scan_fn_for(method, **kw), args, reps, peak))
  out.write_text(json.dumps(report, indent=1))
  print(f"wrote {out} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  main()
