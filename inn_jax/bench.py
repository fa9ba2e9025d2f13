"""Speed and memory of each model's real train step, its forward pass and each INN scan method.

    python -m inn_jax.bench          # short: small sizes, all four models, 4 x 128, a few minutes
    python -m inn_jax.bench --models inn --sizes paper --batch 8 --seq 256 \\
        --inn_settings 1:rows,auto --torch_ref ref_train.json ref_infer.json --out DIR
    bash benchmarks/cpu_table.sh     # the README's CPU table (paper sizes, 8 x 256, ~1 hour)

Configs are built in code, as configs/text8.py builds them (train.config.table_config with
PAPER_SIZES, float32 unless --dtype), never read from the repository, so this runs from any
directory and installed. `--sizes small` shrinks each model to SMALL. The INN is the paper-code
form (`--inn_form paper`, variant inn_paper: 4,219,163 parameters at the paper size, the model
benchmarks/torch_reference.sh times) unless `--inn_form default` (variant inn, our default form);
the baselines are their text8 rows (mamba, lstm, transformer).

The train step is the trainer's own: loop.make_train_step compiled by loop.compile_fitting_step
under memory.budget(device), as runner.Run does. Each INN setting of `--inn_settings` (`K[:remat]`
items) fixes the micro-batch count K (train.microbatches=K) or, with `auto`, lets the trainer pick
it (train.microbatches=0: memory.fit's fewest of 1, 2, 4, ... under its fast target, else under
the budget); remat is the INN's model.remat (none | layer | rows; default: the config's, none).
The baselines always use `auto`. The batch is never changed: a step that does not fit is an error
row. Every row is labelled with its setting and the K it ran, e.g. "K=1, remat rows" or
"auto (K=8), remat none".

Each measurement runs in a fresh `python -m inn_jax.bench --job` subprocess (this interpreter,
the current directory, the environment the trainer starts its process in: inn_jax.train.host's
huge pages for malloc where they apply), so peak RSS (CPU) or the allocator's peak (GPU) is that
row's alone.
FLOPs: XLA's cost_analysis of the compiled step, and an analytic count: 2*M*N*K of every
dot_general in the forward jaxpr (times the trip count of enclosing scans; inn_jax.train.flops,
the count the model summary and results.json use), times 3 for the train step. The matmul peak
is the best of `--reps` large square matmuls on the same device.

With `--torch_ref` (JSON lines of benchmarks/torch_reference.sh), each INN setting is divided by
the reference measured on the same machine: by default the peak-memory target (<= 0.25) applies
to K=1 settings (one batch, like the reference's one batch), the speed target (>= 5.5, goal 7) to
the `auto` setting (the trainer's defaults); `--targets` states others (an issue's own); each
ratio says whether model and shape match.

Writes <out>/bench_<device>.json and .md. `--out` defaults to a new folder,
bench-runs/<YYYYmmdd-HHMMSS> under the current directory; files of an earlier run there are
refused unless `--overwrite`.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time
import traceback
import types

from inn_jax.train import host
from inn_jax.train.flops import matmul_flops  # One count for bench, summary, results.json.

MODELS = ("inn", "mamba", "lstm", "transformer")
SIZES = ("paper", "small")
SMALL = {"inn": dict(d_model=64, n_layers=2, n_neurons=4, n_heads=4, d_state=8),  # quickstart
         "mamba": dict(d_model=64, n_layers=2, d_state=8),
         "lstm": dict(hidden=128, n_layers=2),
         "transformer": dict(d_model=64, n_layers=2, n_heads=4, d_ff=256)}
# --inn_form -> the config variant (train.config.table_config): the paper's code, or ours.
INN_FORMS = {"paper": "inn_paper", "default": "inn"}
REMATS = ("none", "layer", "rows")  # inn_jax.models.inn.REMATS (tests keep them equal).
SCAN_METHODS = ("sequential", "associative", "chunked", "chunked_sequential", "blocked", "cpu_kernel",
                "pallas")
# The targets against the paper's PyTorch INN: (measure, comparison, bound, kind, which INN
# settings it applies to). Memory: one batch against the reference's one batch (K=1). Speed and
# FLOP/s: the trainer's defaults (auto). A goal is reported apart from the target it exceeds.
TARGETS = (("peak_memory_ratio", "<=", 0.25, "target", "K=1"),
           ("train_tokens_per_s_ratio", ">=", 5.5, "target", "auto"),
           ("train_tokens_per_s_ratio", ">=", 7.0, "goal", "auto"),
           ("fraction_of_matmul_peak", ">=", 0.5, "target", "auto"))
MEASURES = {"train_tokens_per_s_ratio": "train tok/s, ours / reference",
            "peak_memory_ratio": "peak memory, ours / reference",
            "forward_tokens_per_s_ratio": "forward tok/s, ours / reference (infer)",
            "fraction_of_matmul_peak": "our train FLOP/s / matmul peak"}
TARGETABLE = tuple(m for m in MEASURES if m != "forward_tokens_per_s_ratio")  # Train rows' own.
VOCAB = 27  # text8's characters; speed does not depend on the data, so tokens are random.
GIB = 2 ** 30
_MARK = "@@bench "
_REF_KEYS = ("mode", "batch", "seq", "tok_s", "peak_rss_gib")


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


def job_config(kind: str, size: str, batch: int, seq: int, dtype: str = "float32",
               scan_method: str = "auto", microbatches: int = 0, remat: str | None = None,
               inn_form: str = "paper"):
  """The text8 config of `kind` as configs/text8.py builds it (the INN in `inn_form`), at `size`,
  with this batch and length (train and forward), dtype, scan method, train.microbatches (0: the
  trainer's automatic count) and, for the INN, model.remat (None: the config's)."""
  from inn_jax.train import config as config_lib
  variant = INN_FORMS[inn_form] if kind == "inn" else kind
  c = config_lib.table_config("text8", variant, config_lib.PAPER_SIZES, "text8",
                              batch_size=batch, seq_len=seq, eval_batch_size=batch)
  c.train.microbatches = microbatches
  if size == "small":
    c.model.update(SMALL[kind])
  c.model.dtype = dtype
  if "scan_method" in c.model:
    c.model.scan_method = scan_method
  if remat is not None:
    if "remat" not in c.model:
      raise ValueError(f"model.remat: {kind} has no remat option (only the INN has).")
    c.model.remat = remat
  return c


def train_parts(c):
  """What runner.Run builds before compiling the train step (inn_jax.train.step.build), for
  config `c`: the model (params seed 0, dropout seed 1), its eval split, the initial state laid
  out on the mesh, make_step(k), the train step with k micro-batches, and random_batch(seed),
  a placed batch of random tokens (x_BL, y_BL)."""
  import jax
  from inn_jax.train import step, validate
  validate.check_config(c, jax.device_count())
  p = step.build(c, VOCAB)
  return types.SimpleNamespace(
      model=p.model, mesh=p.mesh, state=p.placed_state(), make_step=p.make_step,
      forward=p.forward, shape=p.shape, compiler_options=c.compiler_options.to_dict() or None,
      random_batch=lambda seed=0: p.random_batch(VOCAB, seed))


def shape_text(batch: int, seq: int, k: int) -> str:
  """How a step takes its batch: "8 x 256 as 1 batch" or "... as 8 micro-batches of 1 x 256"."""
  if k == 1:
    return f"{batch} x {seq} as 1 batch"
  return f"{batch} x {seq} as {k} micro-batches of {batch // k} x {seq}"


def setting_label(requested: int, k: int | None, remat: str | None) -> str:
  """"K=1, remat rows", "auto (K=8), remat none"; k None: not known (the job failed)."""
  head = (f"K={requested}" if requested else "auto" + (f" (K={k})" if k else ""))
  return head + (f", remat {remat}" if remat else "")


def measure_model(kind, size, batch, seq, dtype="float32", scan_method="auto", warmup=1,
                  steps=2, microbatches=0, remat=None, inn_form="paper") -> dict:
  """Train step and forward figures of one model (run it in a fresh process: see module doc)."""
  import jax
  from inn_jax.models import count_params
  from inn_jax.ops import scan
  from inn_jax.train import loop, memory
  from inn_jax.train import mesh as mesh_lib
  c = job_config(kind, size, batch, seq, dtype, scan_method, microbatches, remat, inn_form)
  p = train_parts(c)
  tried = []

  def make_step(k):  # Records each count memory.fit compiles (compile_s covers them all).
    tried.append(k)
    return p.make_step(k)

  device = jax.local_devices()[0]
  limit, fast = memory.budget(device), memory.fast_bytes(device)
  start = time.perf_counter()
  compiled, k = loop.compile_fitting_step(make_step, p.state, p.shape, p.mesh,
                                          c.train.microbatches, limit, p.compiler_options)
  compile_s = time.perf_counter() - start
  rows = mesh_lib.batch_sharding(p.mesh)
  x, y = p.random_batch()
  with jax.set_mesh(p.mesh):
    step_s, step_times, (state, _) = _median_step(compiled, (p.state, x, y), warmup, steps)
    params = state["params"]  # The step donated the state the model was split into.
    peak, source = _peak_memory(device)  # Before the forward: the step's peak.
    forward_fn = p.forward
    start = time.perf_counter()
    forward = jax.jit(forward_fn, in_shardings=(mesh_lib.state_shardings(params, p.mesh), rows))
    forward = forward.lower(params, x).compile()
    forward_compile_s = time.perf_counter() - start
    forward_s, _, _ = _median_step(forward, (params, x), warmup, steps)
  fwd_matmul = matmul_flops(jax.make_jaxpr(forward_fn)(params, x).jaxpr)
  flops = {"xla_train_step": _xla_flops(compiled), "xla_forward": _xla_flops(forward),
           "analytic_forward_matmul": fwd_matmul, "analytic_train_step": 3 * fwd_matmul}
  mem = {name: getattr(compiled.memory_analysis(), f"{name}_size_in_bytes")
         for name in ("temp", "argument", "output", "alias", "generated_code")}
  method = scan.auto_method() if scan_method == "auto" else scan_method
  resolved_remat = c.model.get("remat")
  return dict(
      kind=kind, size=size, form=inn_form if kind == "inn" else None,
      params=count_params(p.model), batch=batch, seq=seq,
      microbatches_requested=microbatches, microbatches=k, microbatches_tried=tried,
      remat=resolved_remat, label=setting_label(microbatches, k, resolved_remat),
      shape=shape_text(batch, seq, k), memory_limit_bytes=limit, fast_target_bytes=fast,
      dtype=str(c.model.dtype), scan_method=method if "scan_method" in c.model else None,
      compile_s=compile_s, step_s=step_s, step_times_s=step_times,
      train_tokens_per_s=batch * seq / step_s, forward_compile_s=forward_compile_s,
      forward_s=forward_s, forward_tokens_per_s=batch * seq / forward_s, peak_memory_bytes=peak,
      peak_memory_source=source, xla_memory=mem, xla_estimate_bytes=memory.step_bytes(compiled),
      xla_temp_plus_argument_bytes=mem["temp"] + mem["argument"], flops=flops,
      achieved_flops_per_s={"xla": (flops["xla_train_step"] or 0) / step_s,
                            "analytic": flops["analytic_train_step"] / step_s})


def machine_and_matmul(sizes, dtypes, reps: int) -> dict:
  """The machine, and the best FLOP/s of n x n @ n x n for each n and dtype."""
  import jax
  info = pathlib.Path("/proc/cpuinfo")
  cpu = next((x.split(":", 1)[1].strip() for x in (info.read_text().splitlines() if
              info.exists() else []) if x.startswith("model name")), platform.processor())
  devices = jax.devices()
  machine = {"cpu_model": cpu, "cpu_cores": os.cpu_count(), "python": platform.python_version(),
             "jax": jax.__version__, "backend": jax.default_backend(),
             "device_kind": devices[0].device_kind, "device_count": len(devices),
             "xla_flags": os.environ.get("XLA_FLAGS", ""),
             "malloc_huge_pages": host.malloc_huge_pages()}
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
  """Runs one job in a fresh `python -m inn_jax.bench --job` process (this interpreter, the
  current directory, started as the trainer starts its process); its result, or {"error": one
  line}."""
  env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
  env = host.huge_pages_env(env) or env  # Started as the trainer starts its process.
  cmd = [sys.executable, "-m", "inn_jax.bench", "--job", json.dumps(job)]
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {"error": f"timed out after {timeout:.0f} s (--job_timeout_s)"}
  found = [line[len(_MARK):] for line in proc.stdout.splitlines() if line.startswith(_MARK)]
  if not found:  # Killed (e.g. for memory) or broken before it could report.
    tail = " ".join(proc.stderr.strip().splitlines()[-3:])[-600:]
    return {"error": f"exit {proc.returncode}: {tail}"}
  return json.loads(found[-1])


def _job_main(job: dict):
  """The --job side: one result line, or one error line (the traceback goes to stderr)."""
  fn = machine_and_matmul if job.pop("what") == "matmul" else measure_model
  try:
    result = fn(**job)
  except Exception as e:  # An error row, e.g. memory.StepMemoryError: the step does not fit.
    traceback.print_exc()
    result = {"error": f"{type(e).__name__}: " + " ".join(str(e).split())}
  print(_MARK + json.dumps(result), flush=True)


def _like_for_like(r: dict, ref: dict, one_batch: bool) -> tuple[bool, str]:
  """Whether row `r` computes what reference line `ref` does: the same model (its parameter
  count when the line has one, else the paper size in the paper form), batch x seq and, where
  `one_batch`, one batch as the reference's."""
  same_model = (r["params"] == ref["params"] if "params" in ref else
                r["size"] == "paper" and r.get("form") == "paper")
  why = [] if same_model else [f"another model ({r['params']:,} parameters)"]
  if (r["batch"], r["seq"]) != (ref["batch"], ref["seq"]):
    why.append(f"another shape ({r['batch']} x {r['seq']})")
  if one_batch and r["microbatches"] != 1:
    why.append(f"{r['microbatches']} micro-batches")
  return not why, ", ".join(why)


def parse_targets(text: str) -> tuple:
  """"peak_memory_ratio<=1@K=1,train_tokens_per_s_ratio>=5@K=1" -> TARGETS' rows: each
  `measure op bound @ settings`, op <= or >=, settings K=1 or auto; a `goal:` prefix makes it a
  goal. Raises ValueError naming the part and the fix."""
  out = []
  for part in (x.strip() for x in text.split(",") if x.strip()):
    kind, body = ("goal", part[5:]) if part.startswith("goal:") else ("target", part)
    body, _, applies = body.partition("@")
    op = "<=" if "<=" in body else ">=" if ">=" in body else None
    measure, _, bound = body.partition(op) if op else (body, "", "")
    try:
      value = float(bound)
    except ValueError:
      value = None
    if op is None or value is None or measure not in TARGETABLE or applies not in ("K=1", "auto"):
      raise ValueError(
          f"--targets {part!r}: not MEASURE<=BOUND@K=1 or MEASURE>=BOUND@auto (optionally "
          f"goal:...); measures: {', '.join(TARGETABLE)}.")
    out.append((measure, op, value, kind, applies))
  if not out:
    raise ValueError(f"--targets {text!r}: names no target; leave the flag out for the "
                     "defaults.")
  return tuple(out)


def torch_ratios(report: dict, ref_lines: list[dict], targets: tuple = TARGETS) -> dict:
  """Ours / the PyTorch reference's, for each INN setting at the paper size (else at the first
  size benchmarked), with `targets` (TARGETS' rows; --targets): each names the settings it
  applies to, and is met only where the row is like for like with the reference
  (_like_for_like)."""
  train = next((r for r in ref_lines if r.get("mode") == "train"), None)
  infer = next((r for r in ref_lines if r.get("mode") == "infer"), None)
  inns = [r for r in report["models"] if r.get("kind") == "inn" and "error" not in r]
  if not inns or train is None:
    return {"error": "needs an INN row without error and a reference line with mode 'train'"}
  size = "paper" if any(r["size"] == "paper" for r in inns) else inns[0]["size"]
  out = {"reference": ref_lines, "size": size, "settings": [],
         "reference_text": shape_text(train["batch"], train["seq"], 1)}
  for r in (r for r in inns if r["size"] == size):
    peak = report["matmul"][r["dtype"]]["peak_flops_per_s"]
    s = {"label": r["label"], "microbatches_requested": r["microbatches_requested"],
         "microbatches": r["microbatches"], "remat": r["remat"],
         "ours": shape_text(r["batch"], r["seq"], r["microbatches"])
                 + (f", remat {r['remat']}" if r["remat"] else ""),
         "train_tokens_per_s_ratio": r["train_tokens_per_s"] / train["tok_s"],
         "peak_memory_ratio": r["peak_memory_bytes"] / (train["peak_rss_gib"] * GIB),
         "fraction_of_matmul_peak": r["achieved_flops_per_s"]["analytic"] / peak}
    s["same_model_and_shape"], s["differs"] = _like_for_like(r, train, one_batch=False)
    if infer:
      s["forward_tokens_per_s_ratio"] = r["forward_tokens_per_s"] / infer["tok_s"]
    s["targets"] = []
    for measure, op, bound, kind, applies in targets:
      if r["microbatches_requested"] != (1 if applies == "K=1" else 0):
        continue
      like, differs = _like_for_like(r, train, one_batch=applies == "K=1")
      within = s[measure] >= bound if op == ">=" else s[measure] <= bound
      s["targets"].append({"measure": measure, "kind": kind, "bound": f"{op} {bound}",
                           "within_bound": bool(within), "like_for_like": like,
                           "differs": differs, "met": bool(within and like)})
    out["settings"].append(s)
  return out


def _row(cells) -> str:
  return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header, rows) -> list[str]:
  return [_row(header), _row(["---"] * len(header)), *map(_row, rows), ""]


def _gib(n: float) -> str:
  """GiB with two decimals, or three significant digits below 0.1 (tiny models' steps)."""
  return f"{n / GIB:.2f}" if n >= 0.1 * GIB else f"{n / GIB:.3g}"


def _cells(r: dict, keys) -> list[str]:
  """One row's cells; an error row has its message and blanks."""
  if "error" in r or "skipped" in r:
    text = r.get("error", r.get("skipped"))[:300]
    head = [r.get("label", "-"), text] if keys[0] == "label" else [text]
    return head + [""] * (len(keys) - len(head))
  cells = {"label": r["label"], "params": f"{r['params']:,}", "shape": r["shape"],
           "dtype": r["dtype"], "scan": r["scan_method"] or "-",
           "train": f"{r['train_tokens_per_s']:.1f}", "forward": f"{r['forward_tokens_per_s']:.1f}",
           "compile": f"{r['compile_s']:.1f} / {r['forward_compile_s']:.1f}",
           "peak": _gib(r["peak_memory_bytes"]), "xla": _gib(r["xla_estimate_bytes"])}
  return [cells[k] for k in keys]


def _torch_lines(t: dict) -> list[str]:
  lines = ["## Against the paper's PyTorch INN", ""]
  if "error" in t:
    return lines + [t["error"], ""]
  train = next(r for r in t["reference"] if r.get("mode") == "train")
  infer = next((r for r in t["reference"] if r.get("mode") == "infer"), None)
  params = f", {train['params']:,} parameters" if "params" in train else ""
  lines += [f"Reference (--torch_ref): train {t['reference_text']}, {train['tok_s']} tok/s, "
            f"{train['peak_rss_gib']} GiB peak RSS{params}"
            + (f"; infer {shape_text(infer['batch'], infer['seq'], 1)}, {infer['tok_s']} tok/s"
               if infer else "") + f". Ours: the INN at the {t['size']} size.", ""]
  rows = []
  for s in t["settings"]:
    targets = {x["measure"]: [] for x in s["targets"]}
    for x in s["targets"]:
      targets[x["measure"]].append(x)
    for measure, name in MEASURES.items():
      if measure not in s:
        continue
      value = f"{s[measure]:.3f}"
      for x in targets.get(measure) or [None]:
        if x is None:
          bound = result = "-"
        else:
          bound = f"{x['kind']} {x['bound']}"
          result = ("met" if x["met"] else "not met" if x["like_for_like"] else
                    f"not like for like: {x['differs']}")
        rows.append([s["label"], s["ours"], t["reference_text"], name, value, bound, result])
  lines += _table(["INN setting", "ours", "reference", "measure", "value", "target", "result"],
                  rows)
  for s in t["settings"]:
    if not s["same_model_and_shape"]:
      lines.append(f"- {s['label']}: NOT like for like with the reference: {s['differs']}.")
  return lines + [""]


def markdown(report: dict) -> str:
  """The report as Markdown: models, FLOP/s, scan methods, ratios to the PyTorch reference."""
  m, models = report["machine"], report["models"]
  lines = [f"# Benchmark on {m['device_kind']} x{m['device_count']} ({m['cpu_model']}, "
           f"{m['cpu_cores']} cores), jax {m['jax']}, {report['date']}", "",
           f"`{report['command']}`", ""]
  keys = ("label", "params", "shape", "dtype", "scan", "train", "forward", "compile", "peak",
          "xla")
  header = ["model", "size", "setting", "params", "batch x seq", "dtype", "scan", "train tok/s",
            "forward tok/s", "compile s (train / fwd)", "peak memory GiB", "XLA step GiB"]
  lines += _table(header, [[r["kind"], r["size"], *_cells(r, keys)] for r in models])
  ok = [r for r in models if "error" not in r]
  form = report["settings"]["inn_form"]
  lines.append(f"INN form: {form} (config variant {INN_FORMS[form]}); baselines: their text8 "
               "rows. Setting: K micro-batches per step (train.microbatches=K), or auto "
               "(train.microbatches=0, the trainer's default: the fewest that fit), and the INN's "
               "model.remat.")
  if ok:
    r = ok[0]
    lines.append(f"Auto picks the fewest K of 1, 2, 4, ... whose XLA step estimate is at most "
                 f"{r['fast_target_bytes'] / GIB:.2f} GiB (memory.fast_bytes; 0: none), else "
                 f"at most {r['memory_limit_bytes'] / GIB:.2f} GiB (memory.budget). Peak memory: "
                 f"{r['peak_memory_source']}, one process per row; compile s of an auto row "
                 "covers every K it compiled.")
  lines += ["", "## FLOP/s", ""]
  for dtype, p in report["matmul"].items():
    runs = ", ".join(f"{r['n']}^3 {r['flops_per_s'] / 1e9:.0f}" for r in p["runs"])
    lines.append(f"- Matmul peak {dtype}: {p['peak_flops_per_s'] / 1e9:.1f} GFLOP/s ({runs}).")
  for r in ok:
    f, a = r["flops"], r["achieved_flops_per_s"]
    frac = a["analytic"] / report["matmul"][r["dtype"]]["peak_flops_per_s"]
    lines.append(f"- {r['kind']} {r['size']} ({r['label']}) train step: "
                 f"{f['analytic_train_step'] / 1e9:.1f} GFLOP analytic, "
                 f"{(f['xla_train_step'] or 0) / 1e9:.1f} GFLOP by XLA; "
                 f"{a['analytic'] / 1e9:.1f} GFLOP/s = {100 * frac:.1f}% of the matmul peak.")
  lines += ["", "FLOPs: analytic = 3 x the forward's dot_general FLOPs (2*M*N*K, scan bodies "
            "times their length); XLA = compiled.cost_analysis(), which counts a loop body "
            "once.", ""]
  if report["scan_methods"]:
    keys = ("label", "shape", "train", "compile", "peak", "xla")
    lines += [f"## INN scan methods ({report['scan_size']} size, the trainer's automatic K)",
              ""] + _table(
        ["method", "setting", "batch x seq", "train tok/s", "compile s (train / fwd)",
         "peak memory GiB", "XLA step GiB"],
        [[k, *_cells(r, keys)] for k, r in report["scan_methods"].items()])
  if report.get("torch_reference"):
    lines += _torch_lines(report["torch_reference"])
  return "\n".join(lines).rstrip("\n") + "\n"


def _csv(text: str, allowed, flag: str) -> list[str]:
  items = [s.strip() for s in text.split(",") if s.strip()]
  bad = [s for s in items if s not in allowed]
  if bad or not items:
    raise ValueError(f"{flag} {text!r}: unknown {bad}; choose from {list(allowed)}.")
  return items


def parse_settings(text: str, batch: int) -> list[dict]:
  """`--inn_settings` "K[:remat],...": [{"setting", "microbatches" (0: auto), "remat" (None: the
  config's)}]; K must divide `batch`. Raises ValueError with a one-line message."""
  fix = ("each item is K[:remat], K a positive integer or 'auto', remat one of "
         f"{', '.join(REMATS)}; e.g. --inn_settings 1:rows,auto")
  out = []
  for item in (s.strip() for s in text.split(",")):
    k_text, colon, remat = item.partition(":")
    if not item or (colon and remat not in REMATS) or not (
        k_text == "auto" or (k_text.isdigit() and int(k_text) > 0)):
      raise ValueError(f"--inn_settings {text!r}: bad item {item!r}; {fix}.")
    k = 0 if k_text == "auto" else int(k_text)
    if k and batch % k:
      raise ValueError(f"--inn_settings {text!r}: {k} micro-batches do not divide --batch "
                       f"{batch}; use a K that divides it, or auto.")
    setting = {"setting": item, "microbatches": k, "remat": remat or None}
    if any((s["microbatches"], s["remat"]) == (k, remat or None) for s in out):
      raise ValueError(f"--inn_settings {text!r}: {item!r} is listed twice; list it once.")
    out.append(setting)
  return out


def _read_refs(paths) -> list[dict]:
  """The JSON lines of benchmarks/torch_reference.sh; a bad file is a one-line ValueError."""
  lines = []
  for path in paths:
    file = pathlib.Path(path)
    if not file.is_file():
      raise ValueError(f"--torch_ref {path}: no such file; make it with "
                       "benchmarks/torch_reference.sh.")
    for i, text in enumerate(file.read_text().splitlines(), 1):
      if not text.strip():
        continue
      try:
        line = json.loads(text)
      except json.JSONDecodeError as e:
        raise ValueError(f"--torch_ref {path}: line {i} is not JSON ({e}); pass the files "
                         "benchmarks/torch_reference.sh writes.") from None
      missing = [k for k in _REF_KEYS if not isinstance(line, dict) or k not in line]
      if missing:
        raise ValueError(f"--torch_ref {path}: line {i} lacks {missing}; pass the files "
                         "benchmarks/torch_reference.sh writes.")
      lines.append(line)
  return lines


def parse(argv):
  p = argparse.ArgumentParser(
      prog="python -m inn_jax.bench", description="\n\n".join(__doc__.split("\n\n")[:2]),
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="What each figure is: the module docstring (pydoc inn_jax.bench).")
  p.add_argument("--models", default=",".join(MODELS), help="comma-separated, of %(default)s")
  p.add_argument("--sizes", default="small",
                 help="comma-separated: small (default) and/or paper (the paper's sizes)")
  p.add_argument("--inn_form", default="paper", choices=tuple(INN_FORMS),
                 help="the INN's form: paper (variant inn_paper, the paper's code: what the "
                      "PyTorch reference computes; default) or default (variant inn, ours)")
  p.add_argument("--inn_settings", default="1:rows,auto",
                 help="INN rows, comma-separated K[:remat]: K micro-batches (a positive integer) "
                      "or auto (the trainer's fewest that fit), remat none|layer|rows (default: "
                      "the config's, none); default %(default)s")
  p.add_argument("--scan_methods", default="none",
                 help="INN scan methods at --scan_size, at the trainer's automatic K: "
                      "comma-separated of " + ",".join(SCAN_METHODS) + ", 'all' (pallas on GPUs "
                      "only) or 'none' (default)")
  p.add_argument("--scan_size", default="small", choices=SIZES,
                 help="the INN size of --scan_methods; default %(default)s")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                 help="compute dtype; default %(default)s (configs/text8.py trains in "
                      "bfloat16)")
  for flag, default, text in (
      ("batch", 4, "rows per step (the reference's: 8)"),
      ("seq", 128, "tokens per row (the reference's: 256)"),
      ("warmup", 1, "untimed steps"), ("steps", 2, "timed steps (the median is reported)"),
      ("reps", 3, "timed matmuls per size")):
    p.add_argument(f"--{flag}", type=int, default=default, help=f"{text}; default %(default)s")
  p.add_argument("--matmul_sizes", default="2048,4096",
                 help="comma-separated n of the n x n matmuls; default %(default)s")
  p.add_argument("--job_timeout_s", type=float, default=1800.0,
                 help="each row's limit in seconds (a row past it is an error row); "
                      "default %(default)s")
  p.add_argument("--out", default=None,
                 help="folder for bench_<device>.json and .md; default: a new "
                      "bench-runs/<YYYYmmdd-HHMMSS> under the current directory")
  p.add_argument("--overwrite", action="store_true",
                 help="replace the bench_*.json/.md an earlier run left in --out")
  p.add_argument("--torch_ref", nargs="*", default=[], help="JSON-line files from "
                 "benchmarks/torch_reference.sh (train and/or --mode infer)")
  p.add_argument("--targets", default=None,
                 help="the targets against --torch_ref, comma-separated MEASURE<=BOUND@K=1 or "
                      "MEASURE>=BOUND@auto (goal:... for a goal), e.g. "
                      "'peak_memory_ratio<=1@K=1,train_tokens_per_s_ratio>=5@K=1'; default: "
                      + ",".join(f"{'goal:' if k == 'goal' else ''}{m}{o}{b:g}@{w}"
                                 for m, o, b, k, w in TARGETS))
  p.add_argument("--job", help=argparse.SUPPRESS)
  a = p.parse_args(argv)
  if a.job:
    return a
  a.sizes, a.models = _csv(a.sizes, SIZES, "--sizes"), _csv(a.models, MODELS, "--models")
  a.scan_methods = ([] if a.scan_methods == "none" else list(SCAN_METHODS)
                    if a.scan_methods == "all" else _csv(a.scan_methods, SCAN_METHODS,
                                                         "--scan_methods"))
  try:
    a.matmul_sizes = [int(n) for n in a.matmul_sizes.split(",")]
  except ValueError:
    raise ValueError(f"--matmul_sizes {a.matmul_sizes!r}: not comma-separated integers.") from None
  for flag in ("batch", "seq", "steps", "reps"):
    if getattr(a, flag) < 1:
      raise ValueError(f"--{flag} {getattr(a, flag)}: must be >= 1.")
  if a.warmup < 0 or min(a.matmul_sizes) < 1:
    raise ValueError("--warmup must be >= 0 and --matmul_sizes >= 1.")
  a.inn_settings = parse_settings(a.inn_settings, a.batch)
  a.torch_lines = _read_refs(a.torch_ref)
  a.targets = TARGETS if a.targets is None else parse_targets(a.targets)
  a.out = pathlib.Path(a.out or pathlib.Path("bench-runs") / time.strftime("%Y%m%d-%H%M%S"))
  if a.out.exists() and not a.out.is_dir():
    raise ValueError(f"--out {a.out}: is a file, not a folder; choose another --out.")
  old = sorted(f.name for pattern in ("bench_*.json", "bench_*.md") for f in a.out.glob(pattern))
  if old and not a.overwrite:
    raise ValueError(f"--out {a.out}: holds {', '.join(old)} of an earlier run; pass "
                     "--overwrite to replace them, or choose another --out.")
  return a


def main(argv=None) -> dict:
  """Runs the benchmark; returns the report (written after every row). Flag errors raise
  ValueError before any work."""
  a = parse(argv)
  if a.job:
    _job_main(json.loads(a.job))
    return {}
  dtypes = ["float32"] + (["bfloat16"] if a.dtype != "float32" else [])
  first = run_job({"what": "matmul", "sizes": a.matmul_sizes, "dtypes": dtypes,
                   "reps": a.reps}, a.job_timeout_s)
  if "error" in first:
    raise RuntimeError(f"the machine/matmul job failed: {first['error']}")
  kind = first["machine"]["device_kind"]
  settings = {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(a).items()
              if k not in ("job", "torch_lines")}
  report = {**first, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": "python -m inn_jax.bench " + " ".join(sys.argv[1:] if argv is None
                                                             else argv),
            "settings": settings, "models": [], "scan_methods": {}, "scan_size": a.scan_size}
  a.out.mkdir(parents=True, exist_ok=True)
  stem = a.out / f"bench_{''.join(c if c.isalnum() else '_' for c in kind)}"
  common = dict(batch=a.batch, seq=a.seq, dtype=a.dtype, warmup=a.warmup, steps=a.steps,
                inn_form=a.inn_form)
  auto = {"setting": "auto", "microbatches": 0, "remat": None}

  def measure(model, size, setting, **extra):
    r = run_job({"what": "model", "kind": model, "size": size, **common, **extra,
                 "microbatches": setting["microbatches"], "remat": setting["remat"]},
                a.job_timeout_s)
    r = {"kind": model, "size": size, "setting": setting["setting"],
         "microbatches_requested": setting["microbatches"],
         "label": setting_label(setting["microbatches"], None, setting["remat"]), **r}
    print(json.dumps({k: r.get(k) for k in ("kind", "size", "label", "shape",
                                            "train_tokens_per_s", "peak_memory_bytes", "error")
                      if k in r}), flush=True)
    return r

  def save():
    if a.torch_lines:
      report["torch_reference"] = torch_ratios(report, a.torch_lines, a.targets)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))

  for size in a.sizes:
    for model in a.models:
      for setting in a.inn_settings if model == "inn" else [auto]:
        report["models"].append(measure(model, size, setting))
        save()
  for method in a.scan_methods:
    # The model row at the auto setting with the config's remat already ran this method.
    done = next((r for r in report["models"] if r["kind"] == "inn" and "error" not in r
                 and r["size"] == a.scan_size and r["microbatches_requested"] == 0
                 and r["setting"] == "auto" and r["scan_method"] == method), None)
    if method == "pallas" and first["machine"]["backend"] != "gpu":
      r = {"skipped": "pallas runs on GPUs (on CPU only in the slow interpret mode of tests)"}
    else:
      r = done or measure("inn", a.scan_size, auto, scan_method=method)
    report["scan_methods"][method] = r
    save()
  save()
  print(f"wrote {stem}.json and {stem}.md")
  return report


def cli(argv=None):
  """The command line: a flag error is one line on stderr and exit status 2, no traceback."""
  try:
    main(argv)
  except ValueError as e:
    print(f"inn_jax.bench: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  cli()
