"""Speed and memory of each model's real train step, its forward pass and each INN scan method.

    python -m inn_jax.bench                          # every model, paper + small sizes, 8 x 256
    python -m inn_jax.bench --models inn --sizes paper --batch 4 --seq 128 --steps 2
    python -m inn_jax.bench --torch_ref benchmarks/results/torch_ref_train_8x256.json

Models come from configs/text8.py (the paper's sizes) or SMALL; the train step is the trainer's
own (loop.make_train_step + loop.compile_train_step, the text8 optimiser). Each measurement runs
in a fresh subprocess, so peak RSS (CPU) or the allocator's peak (GPU) is that model's alone.
FLOPs: XLA's cost_analysis of the compiled step, and an analytic count: 2*M*N*K of every
dot_general in the forward jaxpr (times the trip count of enclosing scans), times 3 for the train
step. The matmul peak is the best of `--reps` large square matmuls on the same device.
Writes <out>/bench_<device>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODELS = ("inn", "mamba", "lstm", "transformer")
SIZES = ("paper", "small")
SMALL = {"inn": dict(d_model=64, n_layers=2, n_neurons=4, n_heads=4, d_state=8),  # quickstart
         "mamba": dict(d_model=64, n_layers=2, d_state=8),
         "lstm": dict(hidden=128, n_layers=2),
         "transformer": dict(d_model=64, n_layers=2, n_heads=4, d_ff=256)}
SCAN_METHODS = ("sequential", "associative", "chunked", "chunked_sequential", "blocked", "pallas")
# The targets against the paper's PyTorch INN: (key, comparison, bound).
TARGETS = (("train_tokens_per_s_ratio", ">=", 5.0), ("peak_memory_ratio", "<=", 0.25),
           ("fraction_of_matmul_peak", ">=", 0.5))
VOCAB = 27  # text8's characters; speed does not depend on the data, so tokens are random.
GIB = 2 ** 30
_MARK = "@@bench "


def _median_step(fn, args, warmup: int, steps: int):
  """(median s, times, last output) of `steps` calls after `warmup`; a tuple output's first
  item (the train state) is fed back as the first argument."""
  import jax
  times, out = [], None
  for i in range(warmup + steps):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    if i >= warmup:
      times.append(time.perf_counter() - start)
    args = (out[0], *args[1:]) if isinstance(out, tuple) else args
  return statistics.median(times), times, out


def matmul_flops(jaxpr, mult: int = 1) -> int:
  """2*M*N*K summed over dot_generals, recursing into sub-jaxprs (scan bodies times `length`)."""
  total = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      (lhs_contract, _), _ = eqn.params["dimension_numbers"]
      k = math.prod(eqn.invars[0].aval.shape[d] for d in lhs_contract)
      total += mult * 2 * k * math.prod(eqn.outvars[0].aval.shape)
    inner = mult * (eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1)
    for p in eqn.params.values():
      for sub in p if isinstance(p, (tuple, list)) else (p,):
        sub = sub if hasattr(sub, "eqns") else getattr(sub, "jaxpr", None)  # (Closed)Jaxpr
        if hasattr(sub, "eqns"):
          total += matmul_flops(sub, inner)
  return total


def _xla_flops(compiled):
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0)) if cost else None


def _peak_memory(device):
  """(bytes, source): the allocator's peak on accelerators, peak RSS of this process on CPU."""
  stats = device.memory_stats() if device.platform != "cpu" else None
  if stats and "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"]), "device memory_stats peak_bytes_in_use"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak RSS (ru_maxrss)"


def job_config(kind: str, size: str, batch: int, seq: int, dtype: str, scan_method: str,
               microbatches: int = 1):
  """The trainer's text8 config for `kind`, at `size`, with this batch, length and dtype."""
  from inn_jax.train import config as config_lib
  c = config_lib.load(str(ROOT / "configs" / f"text8.py:{kind}"))
  c.data.batch_size, c.data.seq_len = batch, seq
  c.data.eval_batch_size = batch
  c.train.microbatches = microbatches
  if size == "small":
    c.model.update(SMALL[kind])
  if dtype != "config":
    c.model.dtype = dtype
  if "scan_method" in c.model:
    c.model.scan_method = scan_method
  return c


def _budget(gib: float, device) -> float:
  """Bytes a step may need: `gib`, or (gib < 0) what the trainer allows (memory.budget);
  0 means no limit."""
  from inn_jax.train import memory
  return gib * GIB if gib >= 0 else memory.budget(device)


def _compile_fitting(c, step_fn, state, mesh, budget: float):
  """Compiles the train step, halving the batch while XLA's memory estimate exceeds `budget`."""
  from inn_jax.train import loop, memory
  batch, rows = c.data.batch_size, mesh.shape["data"] * c.train.microbatches
  while True:
    start = time.perf_counter()
    compiled = loop.compile_train_step(step_fn, state, (batch, c.data.seq_len), mesh)
    seconds = time.perf_counter() - start
    need = memory.step_bytes(compiled)
    if not budget or need <= budget or batch // 2 < rows or (batch // 2) % rows:
      return compiled, batch, seconds, need
    batch //= 2


def measure_model(kind, size, batch, seq, dtype="float32", scan_method="auto", warmup=1,
                  steps=2, mem_budget_gib=0.0, microbatches=1) -> dict:
  """Train step and forward figures of one model (run it in a fresh process: see module doc)."""
  import jax
  import numpy as np
  from flax import nnx
  from inn_jax.models import build_model, count_params
  from inn_jax.ops import scan
  from inn_jax.train import loop, optimizer, validate
  from inn_jax.train import mesh as mesh_lib
  c = job_config(kind, size, batch, seq, dtype, scan_method, microbatches)
  validate.check_config(c, jax.device_count())
  mesh = mesh_lib.make_mesh(c.mesh)
  model = build_model(c.model, VOCAB, nnx.Rngs(params=0, dropout=1))
  model.train()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  model.eval()
  graphdef_eval, _, rest_eval = nnx.split(model, nnx.Param, ...)
  tx = optimizer.make_optimizer(c.optim, c.train.steps)
  state = loop.init_state(params, tx)
  state = jax.device_put(state, mesh_lib.state_shardings(state, mesh))
  step_fn = loop.make_train_step(graphdef, rest, tx,
                                 optimizer.schedules(c.optim, c.train.steps)[0], 1,
                                 c.train.microbatches)
  budget = _budget(mem_budget_gib, jax.devices()[0])
  compiled, b, compile_s, xla_need = _compile_fitting(c, step_fn, state, mesh, budget)
  rows = mesh_lib.batch_sharding(mesh)
  tokens = np.random.default_rng(0).integers(0, VOCAB, (b, seq + 1)).astype(np.int32)
  x, y = (mesh_lib.global_batch(t, rows) for t in (tokens[:, :-1], tokens[:, 1:]))
  with jax.set_mesh(mesh):
    step_s, step_times, (state, _) = _median_step(compiled, (state, x, y), warmup, steps)
    params = state["params"]  # The step donated the state the model was split into.
    peak, source = _peak_memory(jax.devices()[0])  # Before the forward: the step's peak.
    forward_fn = lambda p, t: nnx.merge(graphdef_eval, p, rest_eval)(t)
    start = time.perf_counter()
    forward = jax.jit(forward_fn, in_shardings=(mesh_lib.state_shardings(params, mesh), rows))
    forward = forward.lower(params, x).compile()
    forward_compile_s = time.perf_counter() - start
    forward_s, _, _ = _median_step(forward, (params, x), warmup, steps)
  fwd_matmul = matmul_flops(jax.make_jaxpr(forward_fn)(params, x).jaxpr)
  flops = {"xla_train_step": _xla_flops(compiled), "xla_forward": _xla_flops(forward),
           "analytic_forward_matmul": fwd_matmul, "analytic_train_step": 3 * fwd_matmul}
  mem = {k: getattr(compiled.memory_analysis(), f"{k}_size_in_bytes")
         for k in ("temp", "argument", "output", "alias", "generated_code")}
  method = scan.auto_method() if scan_method == "auto" else scan_method
  return dict(
      kind=kind, size=size, params=count_params(model), batch=b, requested_batch=batch,
      microbatches=c.train.microbatches, remat=c.model.get("remat"),
      seq=seq, dtype=str(c.model.dtype), scan_method=method if "scan_method" in c.model else None,
      compile_s=compile_s, step_s=step_s, step_times_s=step_times,
      train_tokens_per_s=b * seq / step_s, forward_compile_s=forward_compile_s,
      forward_s=forward_s, forward_tokens_per_s=b * seq / forward_s, peak_memory_bytes=peak,
      peak_memory_source=source, xla_memory=mem, xla_estimate_bytes=xla_need,
      xla_temp_plus_argument_bytes=mem["temp"] + mem["argument"], flops=flops,
      achieved_flops_per_s={"xla": (flops["xla_train_step"] or 0) / step_s,
                            "analytic": flops["analytic_train_step"] / step_s})


def machine_and_matmul(sizes, dtypes, reps: int) -> dict:
  """The machine, and the best FLOP/s of n x n @ n x n for each n and dtype."""
  import jax
  import jax.numpy as jnp
  info = pathlib.Path("/proc/cpuinfo")
  cpu = next((x.split(":", 1)[1].strip() for x in (info.read_text().splitlines() if
              info.exists() else []) if x.startswith("model name")), platform.processor())
  devices = jax.devices()
  machine = {"cpu_model": cpu, "cpu_cores": os.cpu_count(), "python": platform.python_version(),
             "jax": jax.__version__, "backend": jax.default_backend(),
             "device_kind": devices[0].device_kind, "device_count": len(devices),
             "xla_flags": os.environ.get("XLA_FLAGS", "")}
  peaks = {}
  for dtype in dtypes:
    runs = []
    for n in sizes:
      a = jax.random.normal(jax.random.key(0), (n, n), dtype)
      mm = jax.jit(lambda a, b: a @ b).lower(a, a).compile()
      best = min(_median_step(mm, (a, a), 1, reps)[1])
      runs.append({"n": n, "best_s": best, "flops_per_s": 2 * n ** 3 / best})
    peaks[dtype] = {"runs": runs, "peak_flops_per_s": max(r["flops_per_s"] for r in runs)}
  return {"machine": machine, "matmul": peaks}


def run_job(job: dict, timeout: float) -> dict:
  """Runs one job in a fresh `python -m inn_jax.bench --job` process; its result or an error."""
  env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
  cmd = [sys.executable, "-m", "inn_jax.bench", "--job", json.dumps(job)]
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=timeout)
  except subprocess.TimeoutExpired:
    return {"error": f"timed out after {timeout:.0f} s"}
  found = [line[len(_MARK):] for line in proc.stdout.splitlines() if line.startswith(_MARK)]
  if proc.returncode or not found:
    return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-1500:]}"}
  return json.loads(found[-1])


def torch_ratios(report: dict, ref_lines: list[dict]) -> dict:
  """Ours / the PyTorch reference's, for the INN at the paper size, with the issue's targets."""
  inns = [r for r in report["models"] if r.get("kind") == "inn" and "error" not in r]
  inn = next((r for r in inns if r["size"] == "paper"), inns[0] if inns else None)
  train = next((r for r in ref_lines if r.get("mode") == "train"), None)
  if inn is None or train is None:
    return {"error": "needs an INN row and a reference line with mode 'train'"}
  peak = report["matmul"][inn["dtype"]]["peak_flops_per_s"]
  out = {"reference": ref_lines, "inn_size": inn["size"], "same_shape": inn["size"] == "paper"
         and (inn["batch"], inn["seq"]) == (train["batch"], train["seq"]),
         "train_tokens_per_s_ratio": inn["train_tokens_per_s"] / train["tok_s"],
         "peak_memory_ratio": inn["peak_memory_bytes"] / (train["peak_rss_gib"] * GIB),
         "fraction_of_matmul_peak": inn["achieved_flops_per_s"]["analytic"] / peak}
  infer = next((r for r in ref_lines if r.get("mode") == "infer"), None)
  if infer:
    out["forward_tokens_per_s_ratio"] = inn["forward_tokens_per_s"] / infer["tok_s"]
  out["targets"] = {k: {"target": f"{op} {bound}", "met": bool(
      out[k] >= bound if op == ">=" else out[k] <= bound)} for k, op, bound in TARGETS}
  return out


def _row(cells) -> str:
  return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header, rows) -> list[str]:
  return [_row(header), _row(["---"] * len(header)), *map(_row, rows), ""]


def _cells(r: dict, keys) -> list[str]:
  """One model row's cells; a batch the memory budget cut says so."""
  cut = f" (cut from {r['requested_batch']})" if r["batch"] != r["requested_batch"] else ""
  k = r.get("microbatches", 1)
  cut += f", {k} micro-batches" if k > 1 else ""
  cells = {"params": f"{r['params']:,}", "shape": f"{r['batch']} x {r['seq']}{cut}",
           "dtype": r["dtype"], "scan": r["scan_method"] or "-",
           "train": f"{r['train_tokens_per_s']:.1f}", "forward": f"{r['forward_tokens_per_s']:.1f}",
           "compile": f"{r['compile_s']:.1f} / {r['forward_compile_s']:.1f}",
           "peak": f"{r['peak_memory_bytes'] / GIB:.2f}",
           "xla": f"{r['xla_temp_plus_argument_bytes'] / GIB:.2f}"}
  return [cells[k] for k in keys]


def markdown(report: dict) -> str:
  """The report as Markdown: models, FLOP/s, scan methods, ratios to the PyTorch reference."""
  m, models = report["machine"], report["models"]
  keys = ("params", "shape", "dtype", "scan", "train", "forward", "compile", "peak", "xla")
  lines = [f"# Benchmark on {m['device_kind']} x{m['device_count']} ({m['cpu_model']}, "
           f"{m['cpu_cores']} cores), jax {m['jax']}, {report['date']}", "",
           f"`{report['command']}`", ""]
  lines += _table(["model", "size", "params", "batch x seq", "dtype", "scan", "train tok/s",
                   "forward tok/s", "compile s (train / fwd)", "peak memory GiB",
                   "XLA temp+arg GiB"],
                  [[r["kind"], r["size"], *(_cells(r, keys) if "error" not in r else
                                            [r["error"][:200]] + [""] * 8)] for r in models])
  ok = [r for r in models if "error" not in r]
  if ok:
    lines += [f"Peak memory: {ok[0]['peak_memory_source']}, one process per row.", ""]
  lines += ["## FLOP/s", ""]
  for dtype, p in report["matmul"].items():
    runs = ", ".join(f"{r['n']}^3 {r['flops_per_s'] / 1e9:.0f}" for r in p["runs"])
    lines.append(f"- Matmul peak {dtype}: {p['peak_flops_per_s'] / 1e9:.1f} GFLOP/s ({runs}).")
  for r in ok:
    f, a = r["flops"], r["achieved_flops_per_s"]
    frac = a["analytic"] / report["matmul"][r["dtype"]]["peak_flops_per_s"]
    lines.append(f"- {r['kind']} {r['size']} train step: {f['analytic_train_step'] / 1e9:.1f} "
                 f"GFLOP analytic, {(f['xla_train_step'] or 0) / 1e9:.1f} GFLOP by XLA; "
                 f"{a['analytic'] / 1e9:.1f} GFLOP/s = {100 * frac:.1f}% of the matmul peak.")
  lines += ["", "FLOPs: analytic = 3 x the forward's dot_general FLOPs (2*M*N*K, scan bodies "
            "times their length); XLA = compiled.cost_analysis(), which counts a loop body "
            "once.", ""]
  if report["scan_methods"]:
    keys = ("shape", "train", "compile", "peak", "xla")
    lines += [f"## INN scan methods ({report['scan_size']} size)", ""] + _table(
        ["method", "batch x seq", "train tok/s", "compile s (train / fwd)", "peak memory GiB",
         "XLA temp+arg GiB"],
        [[k, *(_cells(r, keys) if "train_tokens_per_s" in r else
               [r.get("error", r.get("skipped"))[:200]] + [""] * 4)]
         for k, r in report["scan_methods"].items()])
  t = report.get("torch_reference")
  if t:
    lines += ["## Against the paper's PyTorch INN (same session)", ""]
    if "error" in t:
      return "\n".join(lines + [t["error"]]) + "\n"
    ref = t["reference"][0]
    lines += _table(["measure", "value", "target", "met"],
                    [[k, f"{t[k]:.3f}", v["target"], "met" if v["met"] else "not met"]
                     for k, v in t["targets"].items()])
    lines.append(f"INN {t['inn_size']} size against the reference's {ref['batch']} x "
                 f"{ref['seq']} {ref['mode']} ({ref['tok_s']} tok/s, {ref['peak_rss_gib']} GiB)"
                 + ("." if t["same_shape"] else ": NOT like for like."))
  return "\n".join(lines) + "\n"


def _csv(text: str, allowed, flag: str) -> list[str]:
  items = [s.strip() for s in text.split(",") if s.strip()]
  bad = [s for s in items if s not in allowed]
  if bad:
    raise ValueError(f"{flag}: unknown {bad}; choose from {list(allowed)}.")
  return items


def parse(argv):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  for flag, default in (("sizes", "paper,small"), ("models", ",".join(MODELS)),
                        ("matmul_sizes", "2048,4096")):
    p.add_argument(f"--{flag}", default=default, help="comma-separated")
  p.add_argument("--scan_methods", default="all",
                 help="comma-separated, 'all' (pallas on GPUs only) or 'none'")
  p.add_argument("--scan_size", default="paper", choices=SIZES)
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "config"))
  for flag, default in (("batch", 8), ("seq", 256), ("warmup", 1), ("steps", 2), ("reps", 3),
                        ("microbatches", 1)):
    p.add_argument(f"--{flag}", type=int, default=default)
  p.add_argument("--mem_budget_gib", type=float, default=-1.0,
                 help="cut the batch while XLA's estimate exceeds this; -1: most of the "
                      "free memory, 0: never")
  p.add_argument("--job_timeout_s", type=float, default=7200.0)
  p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
  p.add_argument("--torch_ref", nargs="*", default=[], help="JSON-line files from "
                 "benchmarks/torch_reference.sh")
  p.add_argument("--job", help=argparse.SUPPRESS)
  a = p.parse_args(argv)
  a.sizes, a.models = _csv(a.sizes, SIZES, "--sizes"), _csv(a.models, MODELS, "--models")
  a.scan_methods = ([] if a.scan_methods == "none" else list(SCAN_METHODS)
                    if a.scan_methods == "all" else _csv(a.scan_methods, SCAN_METHODS,
                                                         "--scan_methods"))
  a.matmul_sizes = [int(n) for n in a.matmul_sizes.split(",")]
  if min(a.batch, a.seq, a.steps, *a.matmul_sizes, a.reps, a.microbatches) < 1 or a.warmup < 0:
    raise ValueError("--batch, --seq, --steps, --reps, --microbatches and --matmul_sizes must "
                     "be >= 1, --warmup >= 0.")
  for path in a.torch_ref:
    if not pathlib.Path(path).is_file():
      raise ValueError(f"--torch_ref {path}: no such file; make it with "
                       "benchmarks/torch_reference.sh.")
  return a


def main(argv=None) -> dict:
  a = parse(argv)
  if a.job:
    job = json.loads(a.job)
    fn = machine_and_matmul if job.pop("what") == "matmul" else measure_model
    print(_MARK + json.dumps(fn(**job)), flush=True)
    return {}
  ref_lines = [json.loads(line) for path in a.torch_ref
               for line in pathlib.Path(path).read_text().splitlines() if line.strip()]
  dtypes = ["float32"] + (["bfloat16"] if a.dtype != "float32" else [])
  first = run_job({"what": "matmul", "sizes": a.matmul_sizes, "dtypes": dtypes,
                   "reps": a.reps}, a.job_timeout_s)
  if "error" in first:
    raise RuntimeError(f"the machine/matmul job failed: {first['error']}")
  kind = first["machine"]["device_kind"]
  report = {**first, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": "python -m inn_jax.bench " + " ".join(sys.argv[1:] if argv is None
                                                             else argv),
            "settings": {k: v for k, v in vars(a).items() if k != "job"},
            "models": [], "scan_methods": {}, "scan_size": a.scan_size}
  out = pathlib.Path(a.out)
  out.mkdir(parents=True, exist_ok=True)
  stem = out / f"bench_{''.join(c if c.isalnum() else '_' for c in kind)}"
  common = dict(batch=a.batch, seq=a.seq, dtype=a.dtype, warmup=a.warmup, steps=a.steps,
                mem_budget_gib=a.mem_budget_gib, microbatches=a.microbatches)

  def save():
    if ref_lines:
      report["torch_reference"] = torch_ratios(report, ref_lines)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))

  for size in a.sizes:
    for model in a.models:
      r = run_job({"what": "model", "kind": model, "size": size, **common}, a.job_timeout_s)
      report["models"].append({"kind": model, "size": size, **r})
      print(json.dumps({k: v for k, v in report["models"][-1].items() if k != "flops"}),
            flush=True)
      save()
  for method in a.scan_methods:
    done = next((r for r in report["models"] if r["kind"] == "inn" and r["size"] == a.scan_size
                 and r.get("scan_method") == method), None)
    if method == "pallas" and first["machine"]["backend"] != "gpu":
      r = {"skipped": "pallas runs on GPUs (on CPU only in the slow interpret mode of tests)"}
    else:
      r = done or run_job({"what": "model", "kind": "inn", "size": a.scan_size,
                           "scan_method": method, **common}, a.job_timeout_s)
    report["scan_methods"][method] = r
    print(json.dumps({"scan_method": method, "train_tokens_per_s":
                      r.get("train_tokens_per_s"), **{k: r[k] for k in ("error", "skipped")
                                                      if k in r}}), flush=True)
    save()
  save()
  print(f"wrote {stem}.json and {stem}.md")
  return report


if __name__ == "__main__":
  main()
