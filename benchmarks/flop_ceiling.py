"""How far the INN train step could get toward the matmul peak on this device, in one run.

    python benchmarks/flop_ceiling.py                  # paper INN (paper form), one 1 x 256 batch
    python benchmarks/flop_ceiling.py --batch 2 --seq 128 --out /tmp/ceiling.json

Times the loss gradient of the INN (config built by inn_jax.bench.job_config as the bench's INN
rows: the paper-code form at the paper size unless --inn_form/--size, float32, the default scan)
and the same gradient with the selective scan replaced by an elementwise stand-in
(y = u * silu(z), what remains of Mamba without its recurrence). The second is an upper bound: the
fraction of the matmul peak a train step could reach with a scan that cost nothing. FLOPs are
counted as in `python -m inn_jax.bench` (3 x the forward's dot_general FLOPs); the peak is its
large-matmul best, measured in the same process. Writes JSON to --out (default: a new
bench-runs/<YYYYmmdd-HHMMSS>/flop_ceiling.json under the current directory; an existing file is
refused unless --overwrite).
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
  """selective_scan's contract without the recurrence: u (*lead, L, E), A (*P, E, S) with P
  empty or the last lead axes; y like u, the state (*lead, E, S)."""
  y = u * jax.nn.silu(z)
  state = jnp.zeros((*u.shape[:-2], *A.shape[-2:]), jnp.float32)
  return (y, state) if return_state else y


def gradient_seconds(batch: int, seq: int, repeats: int, scan: bool, size: str = "paper",
                     inn_form: str = "paper") -> tuple[float, int]:
  """(median seconds of one loss gradient, analytic train-step FLOPs)."""
  c = bench.job_config("inn", size, batch, seq, "float32", "auto", inn_form=inn_form)
  real = mamba.selective_scan
  mamba.selective_scan = real if scan else _no_scan
  try:
    model = build_model(c.model, bench.VOCAB, nnx.Rngs(params=0, dropout=1))
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x_BL = jax.random.randint(jax.random.key(0), (batch, seq), 0, bench.VOCAB)
    fresh = lambda p: nnx.merge(graphdef, p, jax.tree.map(lambda a: a, rest))
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(fresh(p)(x_BL), x_BL).mean()
    # The config's XLA options, as the trainer compiles its step with them.
    grad = jax.jit(jax.grad(loss)).lower(params).compile(
        compiler_options=c.compiler_options.to_dict() or None)
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


def parse(argv):
  p = argparse.ArgumentParser(prog="python benchmarks/flop_ceiling.py",
                              description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--seq", type=int, default=256)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--size", default="paper", choices=bench.SIZES)
  p.add_argument("--inn_form", default="paper", choices=tuple(bench.INN_FORMS))
  p.add_argument("--matmul_sizes", default="2048,4096", help="comma-separated n of n x n matmuls")
  p.add_argument("--out", default=None, help="JSON file; default: a new "
                 "bench-runs/<YYYYmmdd-HHMMSS>/flop_ceiling.json under the current directory")
  p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
  a = p.parse_args(argv)
  if min(a.batch, a.seq, a.repeats) < 1:
    raise ValueError("--batch, --seq and --repeats must be >= 1.")
  try:
    a.matmul_sizes = [int(n) for n in a.matmul_sizes.split(",")]
  except ValueError:
    raise ValueError(f"--matmul_sizes {a.matmul_sizes!r}: not comma-separated integers.") from None
  a.out = pathlib.Path(a.out or pathlib.Path("bench-runs") / time.strftime("%Y%m%d-%H%M%S")
                       / "flop_ceiling.json")
  if a.out.exists() and not a.overwrite:
    raise ValueError(f"--out {a.out}: exists; pass --overwrite to replace it, or choose another "
                     "--out.")
  return a


def main(argv=None) -> dict:
  """Measures both gradients; returns the report it wrote. Flag errors raise ValueError first."""
  a = parse(argv)
  report = bench.machine_and_matmul(a.matmul_sizes, ["float32"], 3)
  peak = report["matmul"]["float32"]["peak_flops_per_s"]
  for name, scan in (("inn", True), ("inn_without_scan", False)):
    seconds, flops = gradient_seconds(a.batch, a.seq, a.repeats, scan, a.size, a.inn_form)
    report[name] = {"size": a.size, "form": a.inn_form, "batch": a.batch, "seq": a.seq,
                    "gradient_s": seconds, "flops": flops,
                    "fraction_of_matmul_peak": flops / seconds / peak}
    print(json.dumps({name: report[name]}), flush=True)
  report["command"] = "python benchmarks/flop_ceiling.py " + " ".join(sys.argv[1:] if argv is None
                                                                      else argv)
  a.out.parent.mkdir(parents=True, exist_ok=True)
  a.out.write_text(json.dumps(report, indent=1) + "\n")
  print(f"wrote {a.out}")
  return report


if __name__ == "__main__":
  try:
    main()
  except ValueError as e:  # A flag error: one line, exit status 2.
    print(f"flop_ceiling.py: {e}", file=sys.stderr)
    sys.exit(2)
