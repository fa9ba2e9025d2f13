"""Each named scope's share of one INN train step on this machine, from a jax.profiler trace.

    python benchmarks/profile_shares.py        # configs/quickstart.py's INN, 16 x 128, ~1 min
    python benchmarks/profile_shares.py --config configs/text8.py:inn_paper --steps 2 --out X

The train step is the trainer's (built as inn_jax.bench.train_parts builds it, compiled by
loop.compile_train_step, float32, random tokens of text8's 27 symbols: speed does not depend on
the data), traced by the trainer's StepProfiler (inn_jax/train/profile.py) over --steps steps
after --warmup. The trace (jaxlib's jax.profiler.ProfileData, offline) holds one event per
executed HLO op (CPU: one per thunk, with its `hlo_op` name); the compiled HLO (as_text) gives
each op its op_name metadata, i.e. the named scopes it was traced under. An op's time goes to the
innermost paper scope in its name: embed, layer_k/memory, layer_k/communication, head, loss
(forward, or backward when the name holds transpose(...)), else its top-level scope in the train
step (grads: e.g. the dropout keys and micro-batch sums; optimizer; finite_check), else "other".
An op without metadata takes the scope most of its fused ops have (a fusion), else the one
most of the ops using its result have (XLA's copies and broadcasts of constants).

Shares are of the summed op time. On CPU that sum differs from the step's wall time both ways:
the time between ops (the runtime's dispatch, the Python call that flattens the state, the
tracer's own cost) belongs to no op, and ops may run at once on several threads; the wall time
with and without the trace is written beside it. XProf's op_profile
tool gives no per-op table for CPU traces (its op stats come from device planes, which a CPU
trace has none of), hence this script.
Writes JSON (default benchmarks/results/profile/shares.json) and, beside it (.md), the --top ops
by time as a table: each op's opcode, scope, runs and ms a step.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import platform
import re
import sys
import tempfile
import time
import warnings

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from inn_jax.train import host  # noqa: E402

if __name__ == "__main__":
  host.start_with_huge_pages()  # The process as the trainer starts its own, before JAX.

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.profiler import ProfileData  # noqa: E402

from inn_jax import bench  # noqa: E402
from inn_jax.ops import scan  # noqa: E402
from inn_jax.train import config as config_lib  # noqa: E402
from inn_jax.train import loop, profile  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
_INSTRUCTION = re.compile(r"\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*.*?\s([\w\-]+)\((.*)$")
_LAYER = re.compile(r"layer_\d+")
MODEL_SCOPES = ("embed", "head", "loss")
STEP_SCOPES = ("grads", "optimizer", "finite_check")


def unwrap(part: str) -> str:
  """"transpose(jvp(layer_0))" -> "layer_0"; "jvp()" -> ""."""
  while "(" in part and part.endswith(")"):
    part = part[part.index("(") + 1:-1]
  return part


def classify(op_name: str | None) -> tuple[str, str | None]:
  """(scope, "forward" | "backward" | None) of one op from its op_name metadata."""
  if not op_name:
    return "unattributed", None
  direction = "backward" if "transpose(" in op_name else "forward"
  parts = [unwrap(p) for p in op_name.split(";")[0].split("/")]
  for i, part in enumerate(parts):
    if part in MODEL_SCOPES:
      return part, direction
    if _LAYER.fullmatch(part) and i + 1 < len(parts) and parts[i + 1] in ("memory",
                                                                           "communication"):
      return f"{part}/{parts[i + 1]}", direction
  top = parts[1] if len(parts) > 1 and op_name.startswith("jit(") else None
  if top in STEP_SCOPES:
    return top, direction if top == "grads" else None
  return "other", None


def hlo_scopes(hlo_text: str) -> dict:
  """{instruction name: (opcode, scope, direction)} over every computation of the HLO text.

  An instruction without op_name metadata takes the scope most of its fused ops have (a
  fusion), else the one most of its users have (XLA's copies and broadcasts of constants).
  """
  rows, members, users = {}, {}, collections.defaultdict(list)
  computation = None
  for line in hlo_text.splitlines():
    if line and not line[0].isspace() and line.rstrip().endswith("{"):  # A computation's head.
      computation = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
      continue
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    name, opcode, rest = m.groups()
    op_name = re.search(r'op_name="([^"]*)"', rest)
    calls = re.search(r"calls=%?([\w.\-]+)", rest)
    rows[name] = (opcode, classify(op_name.group(1) if op_name else None),
                  calls.group(1) if calls else None)
    members.setdefault(computation, []).append(name)
    for operand in set(re.findall(r"%([\w.\-]+)", rest.split("metadata=")[0])):
      users[operand].append(name)
  scope = {name: row[1] for name, row in rows.items()}
  for name, (_, own, calls) in rows.items():
    if own[0] == "unattributed" and calls in members:
      inner = collections.Counter(rows[i][1] for i in members[calls]
                                  if rows[i][1][0] != "unattributed")
      scope[name] = inner.most_common(1)[0][0] if inner else own
  for _ in range(4):  # Through chains such as broadcast -> copy -> user.
    for name in rows:
      if scope[name][0] == "unattributed":
        by_users = collections.Counter(scope[u] for u in users.get(name, ())
                                       if scope[u][0] != "unattributed")
        if by_users:
          scope[name] = by_users.most_common(1)[0][0]
  return {name: (rows[name][0], *scope[name]) for name in rows}


def op_events(xplane: pathlib.Path, module: str) -> list[tuple[str, float]]:
  """(hlo_op, seconds) of every leaf op event of `module` in the trace (an event that encloses
  another one on its thread is left out: its inner events are counted)."""
  # jaxlib's event stats type warns on Python 3.12 when read; nothing of ours to fix.
  warnings.filterwarnings("ignore", "builtin type event_stats", DeprecationWarning)
  events = []
  for plane in ProfileData.from_file(str(xplane)).planes:
    for line in plane.lines:
      evs = []
      for e in line.events:
        stats = dict(e.stats)
        if "hlo_op" in stats and stats.get("hlo_module") == module:
          evs.append((e.start_ns, e.start_ns + e.duration_ns, stats["hlo_op"]))
      evs.sort()
      for i, (start, end, op) in enumerate(evs):
        if i + 1 < len(evs) and evs[i + 1][0] < end:
          continue
        events.append((op, (end - start) * 1e-9))
  return events


def measure(spec: str, steps: int, warmup: int, trace_dir: pathlib.Path, batch: int = 0,
            seq: int = 0, top: int = 25) -> dict:
  path, colon, variant = spec.partition(":")
  if not pathlib.Path(path).is_file() and (REPO / path).is_file():
    path = str(REPO / path)  # Relative to the repository, from any directory.
  c = config_lib.load(f"{path}{colon}{variant}")
  c.model.dtype = "float32"
  c.mesh.data = 1
  c.data.batch_size = batch or c.data.batch_size
  c.data.seq_len = seq or c.data.seq_len
  p = bench.train_parts(c)
  k = c.train.microbatches or 1
  compiled = loop.compile_train_step(p.make_step(k), p.state, p.shape, p.mesh,
                                     p.compiler_options)
  hlo = compiled.as_text()
  module = re.match(r"HloModule\s+([\w.\-]+)", hlo).group(1)
  scopes = hlo_scopes(hlo)
  x, y = p.random_batch()
  state = p.state
  with jax.set_mesh(p.mesh):
    for _ in range(warmup):
      state, _ = compiled(state, x, y)
    jax.block_until_ready(state)  # Else the warm-up steps still running are timed as well.
    start = time.perf_counter()
    for _ in range(steps):  # The same steps untraced: what the tracer itself costs.
      state, _ = compiled(state, x, y)
    jax.block_until_ready(state)
    untraced = (time.perf_counter() - start) / steps
    profiler = profile.StepProfiler(trace_dir, f"{warmup + 1}:{warmup + 1 + steps}",
                                    report=lambda text: None)
    jax.block_until_ready(state)
    start = time.perf_counter()
    for s in range(warmup + 1, warmup + 1 + steps):
      state, metrics = profiler.step(s, lambda: compiled(state, x, y), pending=state)
    wall = (time.perf_counter() - start) / steps
  events = op_events(profile.trace_files(trace_dir)[-1], module)
  per = collections.defaultdict(lambda: collections.Counter())
  by_op, runs = collections.Counter(), collections.Counter()
  unknown = 0.0
  for op, seconds in events:
    by_op[op] += seconds
    runs[op] += 1
    if op not in scopes:
      unknown += seconds
      continue
    _, scope, direction = scopes[op]
    per[scope][direction or "all"] += seconds
  total = sum(sum(v.values()) for v in per.values()) + unknown
  shares = {}
  for scope, by in sorted(per.items(), key=lambda kv: -sum(kv[1].values())):
    t = sum(by.values())
    shares[scope] = {"share": t / total, "ms_per_step": 1e3 * t / steps,
                     **{f"{d}_share": v / total for d, v in by.items() if d != "all"}}
  groups = collections.Counter()
  for scope, row in shares.items():
    groups[scope.split("/")[-1] if _LAYER.match(scope) else scope] += row["share"]
  return {
      "config": c.name, "model": c.model.kind, "params": int(sum(
          np.size(v) for v in jax.tree.leaves(p.state["params"]))),
      "shape": list(p.shape), "microbatches": k, "dtype": c.model.dtype,
      "scan_method": scan.auto_method() if c.model.get("scan_method") == "auto"
      else c.model.get("scan_method"), "steps_traced": steps, "warmup": warmup,
      "wall_ms_per_step_traced": 1e3 * wall, "wall_ms_per_step_untraced": 1e3 * untraced,
      "op_ms_per_step": 1e3 * total / steps,
      "op_events": len(events), "ops_not_in_hlo_share": unknown / total if total else None,
      "shares": shares, "shares_by_kind": dict(groups.most_common()),
      "top_ops": [dict(op=op, opcode=scopes.get(op, ("?",))[0],
                       scope=scopes.get(op, (None, "not in the HLO"))[1],
                       direction=scopes.get(op, (None, None, None))[2],
                       runs_per_step=runs[op] / steps, ms_per_step=1e3 * t / steps,
                       share=t / total)
                  for op, t in by_op.most_common(top)],
  }


def top_ops_text(report: dict) -> str:
  """The top ops by time as a Markdown table (committed beside the JSON)."""
  lines = [f"Top HLO ops by time of one train step: {report['config']} ({report['model']}, "
           f"{report['params']:,} parameters, batch {report['shape'][0]} x {report['shape'][1]}, "
           f"{report['dtype']}, scan {report['scan_method']}), {report['steps_traced']} traced "
           f"steps on {report['machine']['cpu_model']} ({report['machine']['cpu_cores']} cores), "
           f"jax {report['machine']['jax']}. Op time {report['op_ms_per_step']:.1f} ms a step "
           f"of {report['wall_ms_per_step_untraced']:.1f} ms wall (untraced), "
           f"{report['op_events'] / report['steps_traced']:,.0f} op events a step.",
           f"Command: `{report['command']}`.", "",
           "| op | opcode | scope | direction | runs/step | ms/step | share of op time |",
           "| --- | --- | --- | --- | ---: | ---: | ---: |"]
  lines += [f"| {r['op']} | {r['opcode']} | {r['scope']} | {r['direction'] or ''} | "
            f"{r['runs_per_step']:,.0f} | {r['ms_per_step']:.2f} | {100 * r['share']:.1f}% |"
            for r in report["top_ops"]]
  return "\n".join(lines) + "\n"


def main(argv=None):
  a = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  a.add_argument("--config", default="configs/quickstart.py",
                 help="config file[:variant], relative to the repository or absolute")
  a.add_argument("--steps", type=int, default=3)
  a.add_argument("--warmup", type=int, default=2)
  a.add_argument("--batch", type=int, default=0, help="data.batch_size (0: the config's)")
  a.add_argument("--seq", type=int, default=0, help="data.seq_len (0: the config's)")
  a.add_argument("--top", type=int, default=25, help="ops in top_ops and the .md table")
  a.add_argument("--out", type=pathlib.Path,
                 default=REPO / "benchmarks" / "results" / "profile" / "shares.json")
  a.add_argument("--trace_dir", type=pathlib.Path, default=None,
                 help="keep the trace here (default: a temporary folder, removed)")
  args = a.parse_args(argv)
  if args.steps < 1 or args.warmup < 0 or args.batch < 0 or args.seq < 0 or args.top < 1:
    a.error(f"--steps {args.steps} --warmup {args.warmup} --batch {args.batch} --seq "
            f"{args.seq} --top {args.top}: steps and top must be >= 1, the others >= 0")
  with tempfile.TemporaryDirectory() as tmp:
    report = measure(args.config, args.steps, args.warmup, args.trace_dir or pathlib.Path(tmp),
                     args.batch, args.seq, args.top)
  info = pathlib.Path("/proc/cpuinfo")
  cpu = next((x.split(":", 1)[1].strip() for x in (info.read_text().splitlines() if
              info.exists() else []) if x.startswith("model name")), platform.processor())
  command = " ".join(["python benchmarks/profile_shares.py",
                      *(sys.argv[1:] if argv is None else argv)])
  report = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
      "machine": {"cpu_model": cpu, "cpu_cores": os.cpu_count(), "jax": jax.__version__,
                  "malloc_huge_pages": host.malloc_huge_pages(),
                  "backend": jax.default_backend(),
                  "device_kind": jax.devices()[0].device_kind}, **report,
      "method": __doc__.split("\n\n", 2)[2].strip()}
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(report, indent=1) + "\n")
  args.out.with_suffix(".md").write_text(top_ops_text(report))
  for scope, row in report["shares"].items():
    print(f"{scope:24s} {100 * row['share']:5.1f}%  {row['ms_per_step']:8.2f} ms/step")
  print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
  main()
