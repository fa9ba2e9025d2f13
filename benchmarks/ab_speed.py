"""Train-step tokens/s of a config at two commits, run alternately in one session (A/B).

    python benchmarks/ab_speed.py                                  # study INN: 06a1301 vs HEAD
    python benchmarks/ab_speed.py --config configs/study.py:inn --base 06a1301 --rounds 5 \\
        --out benchmarks/results/ab_speed_study_inn.json

Each commit is checked out (git worktree) into a scratch folder beside nothing else, and each
measurement is a fresh `python -c` process run in that folder (its own inn_jax on sys.path, the
same interpreter and environment, the process started as that commit's trainer starts its own:
since inn_jax.train.host, with malloc's huge pages where they apply): it builds the trainer's
step with `inn_jax.bench.train_parts` (the trainer's model, optimizer, schedule and micro-batch
count; random tokens of text8's 27 symbols: speed does not depend on the data), compiles it, runs `--warmup` steps, then times
`--steps` steps and prints the median. The rounds alternate base, new, base, new, ... so the
shared machine's noise falls on both alike; the ratio is the median over rounds of new / base
(each round's pair run back to back) with the rounds' min and max beside it.

Writes JSON: both commits, the config, batch, the per-round tokens/s of each side and the ratio,
and each measurement's own figures (step times, minor faults, system time, peak RSS, whether
its malloc asked for huge pages).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]

# Runs inside a commit's checkout: only APIs both sides have (bench.train_parts, loop), and
# each side's process started as its trainer starts one.
_MEASURE = r"""
import json, resource, statistics, sys, time
try:  # The process as that commit's trainer starts it (inn_jax.train.host, where it has one).
  from inn_jax.train import host
  host.start_with_huge_pages()
except ImportError:
  host = None
import jax, numpy as np
from inn_jax import bench
from inn_jax.train import config as config_lib, loop
from inn_jax.train import mesh as mesh_lib
spec, warmup, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = config_lib.load(spec)
c.mesh.data = 1
if len(sys.argv) > 5:  # Another batch than the config's: rows, tokens per row.
  c.data.batch_size, c.data.seq_len = int(sys.argv[4]), int(sys.argv[5])
p = bench.train_parts(c)
compiled = loop.compile_train_step(p.make_step(c.train.microbatches or 1), p.state, p.shape,
                                   p.mesh, p.compiler_options)
rows = mesh_lib.batch_sharding(p.mesh)
tokens = np.random.default_rng(0).integers(0, bench.VOCAB, (p.shape[0], p.shape[1] + 1))
x, y = (mesh_lib.global_batch(t.astype(np.int32), rows) for t in (tokens[:, :-1], tokens[:, 1:]))
state, times = p.state, []
with jax.set_mesh(p.mesh):
  for i in range(warmup + steps):
    if i == warmup:
      before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    state, m = compiled(state, x, y)
    jax.block_until_ready(m["loss"])
    if i >= warmup:
      times.append(time.perf_counter() - start)
after = resource.getrusage(resource.RUSAGE_SELF)
print("@@ab " + json.dumps({
    "step_s": statistics.median(times), "times_s": times, "shape": list(p.shape),
    "loss": float(m["loss"]),
    "minor_faults_per_step": (after.ru_minflt - before.ru_minflt) / steps,
    "system_s_per_step": (after.ru_stime - before.ru_stime) / steps,
    "peak_rss_bytes": after.ru_maxrss * 1024,
    "malloc_huge_pages": bool(host and host.malloc_huge_pages())}))
"""


def _git(*args, cwd=REPO) -> str:
  return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                        text=True).stdout.strip()


def checkout(commit: str, into: pathlib.Path) -> pathlib.Path:
  """`commit`'s tree in `into` (a detached git worktree, removed by remove())."""
  _git("worktree", "add", "--detach", "--force", str(into), commit)
  return into


def remove(path: pathlib.Path):
  subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO,
                 capture_output=True)


def measure(tree: pathlib.Path, spec: str, warmup: int, steps: int, timeout: float,
            env: dict | None = None, shape: tuple[int, int] | None = None) -> dict:
  """One fresh process's median step time for `spec` with `tree`'s inn_jax (and its minor page
  faults and system CPU time a timed step, its peak RSS), in `env` (default: this process's)
  at `shape` (rows, tokens per row; default: the config's)."""
  env = dict(os.environ if env is None else env, PYTHONPATH=str(tree))
  proc = subprocess.run([sys.executable, "-c", _MEASURE, spec, str(warmup), str(steps),
                         *map(str, shape or ())],
                        cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
  line = next((l for l in proc.stdout.splitlines() if l.startswith("@@ab ")), None)
  if proc.returncode != 0 or line is None:
    raise RuntimeError(f"measuring {spec} in {tree} failed (exit {proc.returncode}):\n"
                       + proc.stderr[-3000:])
  return json.loads(line[5:])


def spread(ratios: list[float]) -> dict:
  """The rounds' ratios as the reports hold them: median, min, max and each round's."""
  return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
          "per_round": ratios}


def write(report: dict, out: str | None) -> dict:
  """`report` as JSON at `out` (its folder made), where given; returns it."""
  if out:
    path = pathlib.Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
  return report


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/study.py:inn",
                      help="config spec, relative to the repository (both commits must have it)")
  parser.add_argument("--base", default="06a1301", help="the commit to compare against")
  parser.add_argument("--new", default="HEAD", help="the commit measured against --base")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--timeout_s", type=float, default=900.0, help="per measurement")
  parser.add_argument("--out", default=None, help="JSON path (default: print only)")
  flags = parser.parse_args(argv)
  if flags.rounds < 1 or flags.steps < 1 or flags.warmup < 0:
    parser.error(f"--rounds {flags.rounds} / --steps {flags.steps} / --warmup {flags.warmup}: "
                 "rounds and steps must be >= 1, warmup >= 0")
  commits = {side: _git("rev-parse", ref) for side, ref in (("base", flags.base),
                                                            ("new", flags.new))}
  scratch = pathlib.Path(tempfile.mkdtemp(prefix="ab_speed_"))
  trees = {side: checkout(c, scratch / side) for side, c in commits.items()}
  rounds = []
  try:
    for r in range(flags.rounds):
      row = {side: measure(trees[side], flags.config, flags.warmup, flags.steps,
                           flags.timeout_s) for side in ("base", "new")}
      row["ratio"] = row["base"]["step_s"] / row["new"]["step_s"]
      rounds.append(row)
      print(f"round {r + 1}: base {row['base']['step_s'] * 1e3:.1f} ms, new "
            f"{row['new']['step_s'] * 1e3:.1f} ms, new/base tokens/s {row['ratio']:.3f}",
            flush=True)
  finally:
    for tree in trees.values():
      remove(tree)
  b, l = rounds[0]["new"]["shape"]
  ratios = [row["ratio"] for row in rounds]
  report = {
      "config": flags.config, "commits": commits, "refs": {"base": flags.base, "new": flags.new},
      "batch": [b, l], "rounds": flags.rounds, "warmup": flags.warmup, "steps": flags.steps,
      "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                  "python": platform.python_version()},
      "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
      "tokens_per_s": {side: [b * l / row[side]["step_s"] for row in rounds]
                       for side in ("base", "new")},
      "ratio_new_over_base": spread(ratios),
      "per_round": [{side: row[side] for side in ("base", "new")} for row in rounds],
      "method": ("fresh process per measurement, rounds alternate base then new; the ratio is "
                 "base step time over new step time (new/base tokens/s), median over rounds"),
  }
  print(f"{flags.config}: new/base tokens/s median {report['ratio_new_over_base']['median']:.3f} "
        f"(rounds {min(ratios):.3f}-{max(ratios):.3f})")
  return write(report, flags.out)


if __name__ == "__main__":
  main()
