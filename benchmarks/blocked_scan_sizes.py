"""The blocked CPU scan's forward + backward at the INN's scan shapes: its own sizing against
fixed (block rows, chunk) settings and against an earlier commit's blocked scan, in one process.

    python benchmarks/blocked_scan_sizes.py                       # study and paper shapes, vs 52fffdd
    python benchmarks/blocked_scan_sizes.py --shapes study --base 52fffdd --reps 15 \\
        --out benchmarks/results/blocked_scan_sizes.json

Shapes (rows M, steps L, width E, state S): "study", configs/study.py's INN (batch 16 x 4
neurons, L=128, each neuron's memory E=32 wide, S=8, one A per row as the INN's neurons have); "paper", the paper's INN at
batch 4 (4 x 32 neurons, L=128, E=512, S=16, one shared A). Each timed call is the jitted
value-and-gradient of sum(y * w) + sum(h_final * h0) with respect to u, dt, A, B, C and h0, on
fixed random inputs, float32. --base names a commit whose inn_jax/ops/blocked_scan.py (it imports
jax alone) is loaded beside the current one; its default sizes (chunk = the INN's scan_chunk, 64,
and its block_rows default) are timed as "base". The variants run round-robin --rounds times,
--reps calls each per round, so the shared machine's noise falls on all alike; each variant's
median and minimum over all calls are written, and its gradients' largest relative difference
from the current default's.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from inn_jax.ops import blocked_scan  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHAPES = {"study": dict(rows=64, length=128, width=32, state=8, per_row=True),
          "paper": dict(rows=128, length=128, width=512, state=16, per_row=False)}
CHUNK = 64  # MambaConfig.scan_chunk's default: what the INN passes as chunk_size.
FIXED = {"study": [(16, 64), (64, 16), (64, 32), (64, 64), (16, 16), (8, 16)],
         "paper": [(16, 64), (2, 16), (4, 16), (1, 64)]}


def inputs(rows, length, width, state, per_row, seed=0):
  k = jax.random.split(jax.random.key(seed), 7)
  a_shape = (rows, width, state) if per_row else (width, state)
  return dict(u=jax.random.normal(k[0], (rows, length, width)),
              dt=jax.nn.softplus(jax.random.normal(k[1], (rows, length, width)) - 2.0),
              A=-jnp.exp(0.3 * jax.random.normal(k[2], a_shape)),
              B=jax.random.normal(k[3], (rows, length, state)),
              C=jax.random.normal(k[4], (rows, length, state)),
              h0=0.1 * jax.random.normal(k[5], (rows, width, state)),
              w=jax.random.normal(k[6], (rows, length, width)))


def value_and_grad(scan_fn, w):
  def loss(u, dt, A, B, C, h0):
    y, h = scan_fn(u, dt, A, B, C, h0)
    return jnp.sum(y * w) + jnp.sum(h * h0)
  return jax.jit(jax.value_and_grad(loss, argnums=tuple(range(6))))


def load_base(commit: str):
  """The blocked_scan module of `commit`, loaded under another name."""
  text = subprocess.run(["git", "show", f"{commit}:inn_jax/ops/blocked_scan.py"], cwd=REPO,
                        check=True, capture_output=True, text=True).stdout
  path = pathlib.Path(tempfile.mkdtemp(prefix="blocked_base_")) / "blocked_scan_base.py"
  path.write_text(text)
  spec = importlib.util.spec_from_file_location("blocked_scan_base", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def measure(shape_name: str, base, rounds: int, reps: int) -> dict:
  shape = SHAPES[shape_name]
  x = inputs(**shape)
  args = [x[k] for k in ("u", "dt", "A", "B", "C", "h0")]
  chunk, block = blocked_scan.sizes(shape["rows"], shape["length"], shape["state"],
                                    shape["width"], CHUNK)
  variants = {f"default (rows {block}, chunk {chunk})":
              functools.partial(blocked_scan.scan, chunk_size=CHUNK)}
  for rows, ch in FIXED[shape_name]:
    variants[f"rows {rows}, chunk {ch}"] = functools.partial(blocked_scan.scan, chunk_size=ch,
                                                             block_rows=rows)
  if base is not None:
    variants["base"] = functools.partial(base.scan, chunk_size=CHUNK)
  fns = {name: value_and_grad(fn, x["w"]) for name, fn in variants.items()}
  outs = {name: jax.block_until_ready(fn(*args)) for name, fn in fns.items()}  # Compiles.
  ref = jax.tree.leaves(next(iter(outs.values())))
  times = {name: [] for name in fns}
  for _ in range(rounds):
    for name, fn in fns.items():
      for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times[name].append(time.perf_counter() - start)
  rows = {}
  for name, ts in times.items():
    diff = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
               for a, b in zip(jax.tree.leaves(outs[name]), ref))
    rows[name] = {"median_ms": 1e3 * float(np.median(ts)), "min_ms": 1e3 * float(np.min(ts)),
                  "calls": len(ts), "max_rel_diff_vs_default": diff}
  default = next(iter(rows))
  for row in rows.values():
    row["median_over_default"] = row["median_ms"] / rows[default]["median_ms"]
  return {"shape": shape, "chunk_size": CHUNK, "variants": rows}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shapes", default="study,paper",
                      help=f"comma-separated, of {sorted(SHAPES)}")
  parser.add_argument("--base", default="52fffdd",
                      help="commit whose blocked scan to time beside ('' for none)")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--out", default=None, help="JSON path (default: print only)")
  flags = parser.parse_args(argv)
  shapes = [s for s in flags.shapes.split(",") if s]
  unknown = sorted(set(shapes) - set(SHAPES))
  if unknown or not shapes:
    parser.error(f"--shapes {flags.shapes!r}: choose from {sorted(SHAPES)}")
  if flags.rounds < 1 or flags.reps < 1:
    parser.error(f"--rounds {flags.rounds} / --reps {flags.reps}: both must be >= 1")
  base = load_base(flags.base) if flags.base else None
  report = {"command": "python benchmarks/blocked_scan_sizes.py "
                       + " ".join(argv if argv is not None else sys.argv[1:]),
            "base": flags.base or None, "rounds": flags.rounds, "reps": flags.reps,
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"platform": platform.platform(), "jax": jax.__version__,
                        "device": jax.devices()[0].device_kind},
            "shapes": {}}
  for name in shapes:
    report["shapes"][name] = measure(name, base, flags.rounds, flags.reps)
    for variant, row in report["shapes"][name]["variants"].items():
      print(f"{name:6s} {variant:28s} median {row['median_ms']:8.1f} ms  min "
            f"{row['min_ms']:8.1f} ms  x{row['median_over_default']:.2f} of default  "
            f"diff {row['max_rel_diff_vs_default']:.1e}", flush=True)
  if flags.out:
    out = pathlib.Path(flags.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
  return report


if __name__ == "__main__":
  main()
