"""The INN's projections on XLA's CPU backend: each as the contraction is written over the
population's axes, against the layout inn_jax.nn.neurons uses on one CPU device, in one process.

    python benchmarks/cpu_layouts.py                  # study shapes, prints JSON
    python benchmarks/cpu_layouts.py --rounds 5 --reps 20 --out benchmarks/results/cpu_layouts.json

Shapes: configs/study.py's INN, batch 16 x 128 with 4 neurons of width 64, each neuron's memory
32 wide (d_state 8, dt rank 4). Each case is one projection of x (16, 4, 128, I) by a shared
(I, O) or a per-neuron (4, I, O) kernel, timed as the jitted value-and-gradient (with respect to
x and the kernel) of sum(tanh(y)), float32:

  shared   "einsum": jnp.einsum("...i,io->...o") on the 4-D array (the contraction as written);
           "rows":   neurons.on_rows, the leading axes merged into one row axis (a 2-D matmul).
  neuron   "einsum": jnp.einsum("...nli,nio->...nlo") (as written);
           "rows":   neurons.Dense on one CPU device: neuron-major rows (N, B*L, I), one batched
                     matmul with its batch axis leading.

Both forms of a case compute the same values (checked here, to 1e-5 relative). The variants run
round-robin --rounds times, --reps calls each per round, so the shared machine's noise falls on
all alike; written: each variant's median and minimum over all its calls, and per case the ratio
of medians einsum / rows (above 1: the row layout is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from inn_jax.nn import neurons  # noqa: E402

B, N, L = 16, 4, 128
# (name, kind, I, O): the study INN's projections (communication: fused q/k/v in, out; memory:
# in (x and z), x_proj (dt rank + 2 d_state), out).
CASES = [("communication.in_proj", "shared", 64, 192),
         ("communication.out_proj", "shared", 64, 64), ("memory.in_proj", "neuron", 64, 64),
         ("memory.x_proj", "neuron", 32, 20),
         ("memory.out_proj", "neuron", 32, 64)]


def forms(kind: str, d_in: int, d_out: int):
  """{"einsum": f, "rows": f}, each f(x, kernel) -> y."""
  if kind == "shared":
    return {"einsum": lambda x, w: jnp.einsum("...i,io->...o", x, w),
            "rows": lambda x, w: neurons.on_rows(lambda r: r @ w, x)}
  dense = neurons.Dense(d_in, d_out, kernel_init=nnx.initializers.lecun_normal(), n_neurons=N,
                        rngs=nnx.Rngs(0))

  graph, state = nnx.split(dense)  # One leaf, the kernel: given as w.

  def rows(x, w):
    return nnx.merge(graph, jax.tree.map(lambda _: w, state))(x)

  return {"einsum": lambda x, w: jnp.einsum("...nli,nio->...nlo", x, w), "rows": rows}


def timed(fn, x, w):
  step = jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(jnp.tanh(fn(x, w))), argnums=(0, 1)))
  jax.block_until_ready(step(x, w))

  def one():
    start = time.perf_counter()
    jax.block_until_ready(step(x, w))
    return time.perf_counter() - start

  return one, step


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--rounds", type=int, default=5)
  ap.add_argument("--reps", type=int, default=20)
  ap.add_argument("--out", default=None, help="write the JSON here (else print it)")
  args = ap.parse_args(argv)
  if args.rounds < 1 or args.reps < 1:
    print(f"cpu_layouts: --rounds {args.rounds} and --reps {args.reps} must be >= 1",
          file=sys.stderr)
    raise SystemExit(2)
  if jax.default_backend() != "cpu":
    print(f"cpu_layouts: the default backend is {jax.default_backend()!r}; this measures XLA's "
          "CPU backend (JAX_PLATFORMS=cpu)", file=sys.stderr)
    raise SystemExit(2)
  rng = np.random.default_rng(0)
  runs, results = {}, {}
  for name, kind, d_in, d_out in CASES:
    x = jnp.asarray(rng.standard_normal((B, N, L, d_in)), jnp.float32)
    w_shape = (d_in, d_out) if kind == "shared" else (N, d_in, d_out)
    w = jnp.asarray(rng.standard_normal(w_shape) / np.sqrt(d_in), jnp.float32)
    values = {}
    for form, fn in forms(kind, d_in, d_out).items():
      runs[(name, form)], step = timed(fn, x, w)
      values[form] = jax.tree.map(np.asarray, step(x, w))
    for a, b in zip(jax.tree.leaves(values["einsum"]), jax.tree.leaves(values["rows"])):
      np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * np.abs(a).max())
    results[name] = dict(kind=kind, d_in=d_in, d_out=d_out, times_s={"einsum": [], "rows": []})
  for _ in range(args.rounds):
    for (name, form), one in runs.items():
      results[name]["times_s"][form] += [one() for _ in range(args.reps)]
  for r in results.values():
    t = r.pop("times_s")
    r["median_ms"] = {f: 1e3 * statistics.median(v) for f, v in t.items()}
    r["min_ms"] = {f: 1e3 * min(v) for f, v in t.items()}
    r["einsum_over_rows"] = r["median_ms"]["einsum"] / r["median_ms"]["rows"]
  report = dict(
      command="python benchmarks/cpu_layouts.py " + " ".join(argv if argv is not None
                                                              else sys.argv[1:]),
      written=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
      machine=dict(cpu_count=len(os.sched_getaffinity(0)),
                   platform=platform.platform(), jax=jax.__version__),
      shape=dict(batch=B, neurons=N, length=L), rounds=args.rounds, reps=args.reps,
      method=("jitted value_and_grad of sum(tanh(x @ kernel)) w.r.t. x and kernel, float32; "
              "variants round-robin; median and min over all calls"),
      cases=results)
  text = json.dumps(report, indent=1)
  if args.out:
    pathlib.Path(args.out).write_text(text + "\n")
  else:
    print(text)
  return report


if __name__ == "__main__":
  main()
