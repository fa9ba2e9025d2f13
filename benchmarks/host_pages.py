"""The trainer's step with the system's malloc and with transparent huge pages for its mapped
chunks (GLIBC_TUNABLES=glibc.malloc.hugetlb=1), run alternately in one session (A/B).

    python benchmarks/host_pages.py --config configs/study.py:inn --rounds 3 \\
        --out benchmarks/results/host_pages_study_inn.json
    python benchmarks/host_pages.py --config configs/text8.py:inn_paper --batch 4 --seq 128 \\
        --rounds 2 --warmup 2 --steps 4 --out benchmarks/results/host_pages_paper_4x128.json

Why: XLA:CPU allocates each execution's temp buffer with malloc; glibc maps a chunk that large
fresh and unmaps it when freed, so every step faults the whole buffer in again (4 KiB pages).
With the tunable, glibc asks the kernel for huge pages on those mappings (where the machine's
transparent huge pages are `madvise` or `always`): a few faults where there were thousands.
The trainer starts its process with the tunable where it applies (inn_jax.train.host); here
the system side turns that off (INN_HUGE_PAGES=0) to measure what it buys.
The tunable takes effect only at process start, so each side is a fresh process
(benchmarks/ab_speed.py's measurement, this checkout's inn_jax), rounds alternating system, huge
pages, system, ...; a side's figures are the median step time, minor page faults and system CPU
time a timed step, and peak RSS. Writes JSON; the ratio is system step time over huge-page step
time (tokens/s with huge pages / without), median over rounds.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import ab_speed  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inn_jax.train import host  # noqa: E402


def sides(env: dict) -> dict:
  """The two sides' environments: "system" (no tunable, and the trainer's own restart with huge
  pages turned off: INN_HUGE_PAGES=0) and "huge_pages" (the tunable, as the trainer adds it)."""
  system = {k: v for k, v in env.items() if k != "GLIBC_TUNABLES"}
  return {"system": {**system, host.OPT_OUT: "0"}, "huge_pages": host.with_huge_pages(env)}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/study.py:inn")
  parser.add_argument("--batch", type=int, default=0, help="rows (0: the config's)")
  parser.add_argument("--seq", type=int, default=0, help="tokens per row (0: the config's)")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--steps", type=int, default=15)
  parser.add_argument("--timeout_s", type=float, default=900.0, help="per measurement")
  parser.add_argument("--out", default=None, help="JSON path (default: print only)")
  flags = parser.parse_args(argv)
  if (flags.rounds < 1 or flags.steps < 1 or flags.warmup < 0 or flags.batch < 0
      or flags.seq < 0 or (flags.batch > 0) != (flags.seq > 0)):
    parser.error(f"--rounds {flags.rounds} --steps {flags.steps} --warmup {flags.warmup} --batch "
                 f"{flags.batch} --seq {flags.seq}: rounds and steps >= 1, warmup >= 0, batch "
                 "and seq both 0 (the config's) or both >= 1")
  shape = (flags.batch, flags.seq) if flags.batch else None
  envs = sides(dict(os.environ))
  rounds = []
  for r in range(flags.rounds):
    row = {side: ab_speed.measure(REPO, flags.config, flags.warmup, flags.steps, flags.timeout_s,
                                  env=env, shape=shape) for side, env in envs.items()}
    row["ratio"] = row["system"]["step_s"] / row["huge_pages"]["step_s"]
    rounds.append(row)
    print(f"round {r + 1}: " + ", ".join(
        f"{side} {row[side]['step_s'] * 1e3:.1f} ms ({row[side]['minor_faults_per_step']:,.0f} "
        f"faults, {row[side]['system_s_per_step']:.3f} s system a step)" for side in envs)
        + f"; huge pages / system tokens/s {row['ratio']:.3f}", flush=True)
  ratios = [row["ratio"] for row in rounds]
  thp = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")
  report = {
      "config": flags.config, "batch": rounds[0]["system"]["shape"], "rounds": flags.rounds,
      "warmup": flags.warmup, "steps": flags.steps, "tunable": host.HUGE_PAGES,
      "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                  "python": platform.python_version(),
                  "transparent_hugepage": thp.read_text().strip() if thp.exists() else None},
      "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
      "per_round": [{side: row[side] for side in envs} for row in rounds],
      "ratio_huge_pages_over_system": ab_speed.spread(ratios),
      "method": ("fresh process per measurement (benchmarks/ab_speed.py's), this checkout's "
                 "inn_jax, rounds alternate system then huge pages; the ratio is the system "
                 "step time over the huge-page one, median over rounds"),
  }
  print(f"{flags.config}: huge pages / system tokens/s median {statistics.median(ratios):.3f} "
        f"(rounds {min(ratios):.3f}-{max(ratios):.3f})")
  return ab_speed.write(report, flags.out)


if __name__ == "__main__":
  main()
