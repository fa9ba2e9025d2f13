"""How far the INN train step could get toward the matmul peak on this device, in one run.

    python benchmarks/flop_ceiling.py                  # paper INN, one 1 x 256 micro-batch
    python benchmarks/flop_ceiling.py --batch 2 --seq 128 --out /tmp/ceiling.json

Times the loss gradient of the paper-size INN (configs/text8.py, float32, the default scan) and the
same gradient with the selective scan replaced by an elementwise stand-in (y = u * silu(z), what
remains of Mamba without its recurrence). The second is an upper bound: the fraction of the matmul
peak a train step could reach with a scan that cost nothing. FLOPs are counted as in
`python -m inn_jax.bench` (3 x the forward's dot_general FLOPs); the peak is its large-matmul
best, measured in the same process. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from inn_jax import bench  # noqa: E402
from inn_jax.models import build_model  # noqa: E402
from inn_jax.nn import mamba  # noqa: E402


def _no_scan(u, delta, A, B, C, D=None, z=None, *args, return_state=False, **kw):
  y = u * jax.nn.silu(z)
  return (y, jnp.zeros((u.shape[0], *A.shape), jnp.float32)) if return_state else y


def gradient_seconds(batch: int, seq: int, repeats: int, scan: bool) -> tuple[float, int]:
  """(median seconds of one loss gradient, analytic train-step FLOPs)."""
  c = bench.job_config("inn", "paper", batch, seq, "float32", "auto")
  real = mamba.selective_scan
  mamba.selective_scan = real if scan else _no_scan
  try:
    model = build_model(c.model, bench.VOCAB, nnx.Rngs(params=0, dropout=1))
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x_BL = jax.random.randint(jax.random.key(0), (batch, seq), 0, bench.VOCAB)
    fresh = lambda p: nnx.merge(graphdef, p, jax.tree.map(lambda a: a, rest))
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(fresh(p)(x_BL), x_BL).mean()
    grad = jax.jit(jax.grad(loss)).lower(params).compile()
    flops = 3 * bench.matmul_flops(jax.make_jaxpr(lambda p: fresh(p)(x_BL))(params).jaxpr)
    jax.block_until_ready(grad(params))
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(grad(params))
      times.append(time.perf_counter() - start)
    return statistics.median(times), flops
  finally:
    mamba.selective_scan = real


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--seq", type=int, default=256)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results" /
                                      "flop_ceiling.json"))
  a = p.parse_args(argv)
  report = bench.machine_and_matmul([2048, 4096], ["float32"], 3)
  peak = report["matmul"]["float32"]["peak_flops_per_s"]
  for name, scan in (("inn", True), ("inn_without_scan", False)):
    seconds, flops = gradient_seconds(a.batch, a.seq, a.repeats, scan)
    report[name] = {"batch": a.batch, "seq": a.seq, "gradient_s": seconds, "flops": flops,
                    "fraction_of_matmul_peak": flops / seconds / peak}
    print(json.dumps({name: report[name]}), flush=True)
  report["command"] = "python benchmarks/flop_ceiling.py " + " ".join(sys.argv[1:] if argv is None
                                                                      else argv)
  pathlib.Path(a.out).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(a.out).write_text(json.dumps(report, indent=1) + "\n")
  return report


if __name__ == "__main__":
  main()
