"""The cost of N: what a population of N neurons costs per token, by how they communicate.

  python benchmarks/population_scaling.py                  # both families, ~30 points, CPU
  python benchmarks/population_scaling.py --families fixed_width --ns 4 1024

Two scaling families of the INN (inn_jax.models.INNConfig with neuron_width):
  fixed_width   the population's width W = N x d_neuron fixed (--width, 1024): N = 1024 is 1024
                neurons of width 1. The natural family: the neurons' total state stays the same.
  fixed_neuron  d_neuron fixed (--neuron_width, 16): W grows with N, up to where it fits.
Each N and family for communication "attention" (dense over the neurons, O(N^2 d) per token),
"workspace" (m slots, O(N m d)) and "none". Everything else is one setting for all points:
d_model --d_model, --layers layers, 1 head (a neuron 1 wide has one), memory expand 2 on each
neuron's width, --slots slots, dropout 0, batch --batch x --length, Adam.

Per point, in its own process (so that its peak memory is its own): parameters; matmul FLOPs
per token of the forward pass and of the train step (inn_jax.train.flops: dot_generals only, so
the selective scan's elementwise work is not in it) and XLA's own count of the train step
(cost_analysis, elementwise work included); train tokens/s (the median of --repeats steps after
a compile and warm-up step); peak memory as the process's maximum resident set and as XLA's
buffer plan of the step (arguments + outputs + temporaries - aliased); the loss of the first and
the last step on one fixed batch, which must fall (the model trains). A point that fails or
exceeds --timeout is recorded with why.

Then per family and kind the least-squares slope of log(cost) against log(N) over every N that
ran ("slopes") and over N >= 64 ("slopes_n_ge_64", where the N x N scores dominate attention's
cost): a slope near 0 is a cost flat in N, 1 a cost linear in N. Writes JSON (--out) and a
log-log plot beside it; --from_json recomputes both from an earlier JSON's points.
Times on a shared CPU are noisy: compare the kinds within one run, as ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

KINDS = ("attention", "workspace", "none")
FAMILIES = ("fixed_width", "fixed_neuron")
VOCAB = 27  # text8's characters.


def point(kind: str, family: str, n: int, args) -> dict:
  """One (kind, family, N): built, counted, compiled and timed in this process."""
  import jax
  import jax.numpy as jnp
  import optax
  from flax import nnx

  from inn_jax.models import INN, INNConfig, count_params
  from inn_jax.nn import CommunicationConfig, MambaConfig
  from inn_jax.train import flops

  width = args.width // n if family == "fixed_width" else args.neuron_width
  config = INNConfig(d_model=args.d_model, n_layers=args.layers, n_neurons=n, neuron_width=width,
                     memory=MambaConfig(expand=2.0, neuron_params="full"),
                     communication=CommunicationConfig(kind=kind, n_heads=1, dropout=0.0,
                                                       slots=args.slots))
  model = INN(config, VOCAB, rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tx = optax.adam(1e-3)
  opt_state = tx.init(params)

  def loss_fn(p, x_BL):
    logits = nnx.merge(graphdef, p, rest)(x_BL[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, x_BL[:, 1:]).mean()

  def step(p, o, x_BL):
    loss, grads = jax.value_and_grad(loss_fn)(p, x_BL)
    updates, o = tx.update(grads, o, p)
    return optax.apply_updates(p, updates), o, loss

  # One fixed batch of text-like tokens (a repeated random "vocabulary" of words), so that the
  # loss of repeated steps must fall if the model learns at all.
  rng = np.random.default_rng(0)
  words = [rng.integers(1, VOCAB, rng.integers(2, 8)) for _ in range(20)]
  stream = np.concatenate([np.append(words[i], 0) for i in rng.integers(0, 20, 4000)])
  x_BL = jnp.asarray(stream[:args.batch * (args.length + 1)].reshape(args.batch, -1), jnp.int32)
  tokens = args.batch * args.length
  forward = lambda p, x: nnx.merge(graphdef, p, rest)(x)
  row = {"kind": kind, "family": family, "n_neurons": n, "neuron_width": width,
         "population_width": n * width, "params": count_params(model),
         "forward_flops_per_token": flops.fn_flops(forward, params, x_BL[:, :-1]) / tokens,
         "train_flops_per_token": flops.fn_flops(step, params, opt_state, x_BL) / tokens}
  t0 = time.perf_counter()
  compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state, x_BL).compile()
  row["compile_s"] = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  row["xla_train_flops_per_token"] = float(cost.get("flops", float("nan"))) / tokens
  mem = compiled.memory_analysis()
  row["xla_step_bytes"] = int(mem.argument_size_in_bytes + mem.output_size_in_bytes
                              + mem.temp_size_in_bytes - mem.alias_size_in_bytes)
  params, opt_state, loss = compiled(params, opt_state, x_BL)  # Warm-up.
  losses, times = [float(loss)], []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    params, opt_state, loss = compiled(params, opt_state, x_BL)
    jax.block_until_ready(loss)
    times.append(time.perf_counter() - t0)
    losses.append(float(loss))
  row.update(step_s=float(np.median(times)), tokens_per_s=tokens / float(np.median(times)),
             loss_first=losses[0], loss_last=losses[-1],
             trains=bool(np.isfinite(losses).all() and losses[-1] < losses[0]),
             peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
  return row


def slope(rows, key):
  """Least-squares slope of log(row[key]) against log(N) over the rows that ran."""
  pts = [(r["n_neurons"], r[key]) for r in rows if r.get(key) and r[key] > 0]
  if len(pts) < 2:
    return None
  n, y = np.log(np.asarray(pts, float)).T
  return float(np.polyfit(n, y, 1)[0])


SLOPE_KEYS = ("forward_flops_per_token", "train_flops_per_token", "xla_train_flops_per_token",
              "step_s", "xla_step_bytes", "peak_rss_bytes", "params")


def slopes(points, min_n: int = 1) -> dict:
  """{family: {kind: {key: slope}}} over the points that ran with N >= min_n. tokens/s falls as
  cost rises: its slope is minus step_s's."""
  out = {}
  for r in points:
    out.setdefault(r["family"], {}).setdefault(r["kind"], None)
  for family, kinds in out.items():
    for kind in kinds:
      rows = [r for r in points if r["family"] == family and r["kind"] == kind
              and "failed" not in r and r["n_neurons"] >= min_n]
      s = {key: slope(rows, key) for key in SLOPE_KEYS}
      s["tokens_per_s"] = None if s["step_s"] is None else -s["step_s"]
      kinds[kind] = s
  return out


def plot(result, path):
  from inn_jax import plots
  plt = plots.pyplot()
  keys = [("train_flops_per_token", "matmul FLOPs / token (train step)"),
          ("xla_train_flops_per_token", "XLA FLOPs / token (train step)"),
          ("tokens_per_s", "train tokens / s"), ("xla_step_bytes", "train step bytes (XLA plan)")]
  fig, axes = plt.subplots(len(FAMILIES), len(keys), figsize=(4.2 * len(keys), 7), squeeze=False)
  styles = {"attention": "o-", "workspace": "s-", "none": "^--"}
  for i, family in enumerate(FAMILIES):
    for j, (key, label) in enumerate(keys):
      ax = axes[i][j]
      for kind in KINDS:
        rows = [r for r in result["points"] if r["family"] == family and r["kind"] == kind
                and r.get(key)]
        if rows:
          s = result["slopes"][family][kind].get(key)
          s64 = result["slopes_n_ge_64"][family][kind].get(key)
          legend = kind if s is None else f"{kind} (slope {s:+.2f}" + (
              f"; N>=64 {s64:+.2f})" if s64 is not None else ")")
          ax.plot([r["n_neurons"] for r in rows], [r[key] for r in rows], styles[kind],
                  label=legend)
      ax.set_xscale("log", base=2)
      ax.set_yscale("log")
      ax.set_xlabel("N neurons")
      ax.set_title(f"{family}: {label}", fontsize=9)
      ax.legend(fontsize=7)
  fig.suptitle(f"Population scaling (W={result['settings']['width']} for fixed_width, "
               f"d_neuron={result['settings']['neuron_width']} for fixed_neuron; "
               f"{result['settings']['batch']}x{result['settings']['length']} tokens, "
               f"{result['device']})", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
  p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
  p.add_argument("--ns", nargs="+", type=int, default=[4, 16, 64, 256, 1024])
  p.add_argument("--width", type=int, default=1024, help="W for fixed_width (N must divide it)")
  p.add_argument("--neuron_width", type=int, default=16, help="d_neuron for fixed_neuron")
  p.add_argument("--d_model", type=int, default=128)
  p.add_argument("--layers", type=int, default=2)
  p.add_argument("--slots", type=int, default=16)
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--length", type=int, default=64)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--timeout", type=int, default=900, help="seconds per point")
  p.add_argument("--out", default="benchmarks/results/population_scaling.json")
  p.add_argument("--from_json", help="recompute the slopes and the plot from this JSON's points")
  p.add_argument("--point", help=argparse.SUPPRESS)  # kind,family,N: one point, JSON on stdout.
  args = p.parse_args(argv)
  bad = [n for n in args.ns if n < 1 or args.width % n]
  if bad:
    p.error(f"--ns {bad}: every N must be >= 1 and divide --width={args.width}.")
  if args.point:
    kind, family, n = args.point.split(",")
    print(json.dumps(point(kind, family, int(n), args)))
    return None
  if args.from_json:
    result = json.loads(pathlib.Path(args.from_json).read_text())
    result.update(slopes=slopes(result["points"]), slopes_n_ge_64=slopes(result["points"], 64))
    return _write(result, pathlib.Path(args.out))
  import jax
  passthrough = [f"--{k}={getattr(args, k)}" for k in
                 ("width", "neuron_width", "d_model", "layers", "slots", "batch", "length",
                  "repeats")]
  points = []
  for family in args.families:
    for n in args.ns:
      for kind in args.kinds:
        cmd = [sys.executable, __file__, "--point", f"{kind},{family},{n}", *passthrough]
        try:
          done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
          row = (json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else
                 {"kind": kind, "family": family, "n_neurons": n,
                  "failed": (done.stderr.strip().splitlines() or ["?"])[-1][:300]
                  + f" (exit {done.returncode})"})
        except subprocess.TimeoutExpired:
          row = {"kind": kind, "family": family, "n_neurons": n,
                 "failed": f"over --timeout={args.timeout} s"}
        points.append(row)
        print(json.dumps(row), flush=True)
  result = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
            "cpu_count": os.cpu_count(), "jax": jax.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": "python benchmarks/population_scaling.py " + " ".join(argv or sys.argv[1:]),
            "settings": {k: getattr(args, k) for k in
                         ("width", "neuron_width", "d_model", "layers", "slots", "batch",
                          "length", "repeats")},
            "points": points, "slopes": slopes(points), "slopes_n_ge_64": slopes(points, 64)}
  return _write(result, pathlib.Path(args.out))


def _write(result, out: pathlib.Path):
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=1) + "\n")
  plot(result, out.with_suffix(".png"))
  print(json.dumps({"slopes": result["slopes"], "slopes_n_ge_64": result["slopes_n_ge_64"]},
                   indent=1))
  print(f"wrote {out} and {out.with_suffix('.png')}")
  return result


if __name__ == "__main__":
  main()
