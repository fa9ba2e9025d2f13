"""Studies: a plan committed before its runs, the runs' records, and the report that judges them.

    python -m inn_jax.studies benchmarks/studies/claims-v2 --results_md RESULTS.md \
        --section benchmarks/studies/population-v1

A study is a folder: plan.py (the plan, as Python literals: models, stages, rates, seeds,
rules), registration.json (written by benchmarks/study.py when the study's first run starts:
the hash of the plan's data and of the rules' code, inn_jax/claims.py and inn_jax/stats.py,
the commit, and the corpus: its name, text sha256 and length, ids; a study registered before
registrations held the corpus has corpus.json beside it instead, saying what its runs trained
on), runs/<stage>/<model>-lr<rate>-s<seed>/ (each run's results.json or
diverged.json, metrics.jsonl, config.json, provenance.json; C4's analysis/report.json) and
runs/ngram/ngram.json. The report (report.md, report.json, PNGs, RESULTS.md) reads only those
files, and prints the claims' verdicts only while both hashes equal the registered ones:
otherwise every verdict is withheld with the reason. Beside a verdict, in the rules' words, it
prints what inn_jax/caveats.py reads in the same records (a claim that holds only narrowly, a
tie that is no equivalence, a confound), and the headline says which differences survive
Holm's correction and where each model stands against the n-gram rows by the study's rule.
Each run's config.json must hold what the plan says it ran (model keys, rate, steps, seeds, the
common keys); a run that does not is an error, not a row.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import math
import os
import pathlib
import sys

PLAN_FILE, REGISTRATION, RUNS = "plan.py", "registration.json", "runs"
CORPUS_FILE = "corpus.json"  # A study registered before registration.json held the corpus.
# What identifies a corpus (inn_jax.train.workdir.corpus_record); compared where both know it.
CORPUS_IDENTITY = ("name", "sha256", "chars", "files", "tokens", "tokens_sha256")
RESULTS, DIVERGED, CONFIG, METRICS = "results.json", "diverged.json", "config.json", "metrics.jsonl"
PROVENANCE, ANALYSIS = "provenance.json", "analysis/report.json"
NGRAM = "ngram/ngram.json"
RULES_MODULES = ("claims", "stats")  # inn_jax/<name>.py: the rules' code, hashed by content;
# a plan may name its own (RULES_CODE, its first module the one whose judge() gives verdicts).
WITHHELD = "withheld: the rules changed after the runs began"
PENDING = "pending: no run has started (no registration.json)"


class StudyError(ValueError):
  """Bad input or files: one line naming the path and the fix."""


# ----------------------------------------------------------------------------- plan, hashes

def load_plan(path) -> dict:
  """The plan file's top-level assignments, each a Python literal (nothing is executed)."""
  path = pathlib.Path(path)
  if path.is_dir():
    path = path / PLAN_FILE
  if not path.is_file():
    raise StudyError(f"{path}: no such plan; a study folder holds {PLAN_FILE}.")
  tree = ast.parse(path.read_text(), str(path))
  plan = {}
  for node in tree.body:
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
      continue  # The docstring.
    if not (isinstance(node, ast.Assign) and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)):
      raise StudyError(f"{path}:{node.lineno}: a plan holds only NAME = literal assignments.")
    try:
      value = ast.literal_eval(_resolve(node.value, plan))
    except ValueError as e:
      raise StudyError(f"{path}:{node.lineno}: not a literal ({e}); a plan is data.") from None
    plan[node.targets[0].id] = value
  for key in ("NAME", "CONFIG", "COMMON", "SEED_KEYS", "MODELS", "STAGES", "CADENCE", "RULES"):
    if key not in plan:
      raise StudyError(f"{path}: the plan has no {key}.")
  return plan


def _resolve(node, known):
  """Names of earlier assignments replaced by their values (a plan may reuse RATES)."""
  class Sub(ast.NodeTransformer):
    def visit_Name(self, n):
      if n.id in known:
        return ast.parse(repr(known[n.id]), mode="eval").body
      return n
  return Sub().visit(node)


def _sha(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def plan_sha256(plan: dict) -> str:
  """The hash of the plan's data (comments and layout of plan.py do not change it)."""
  return _sha(json.dumps(plan, sort_keys=True, separators=(",", ":")).encode())


def rules_modules(plan: dict | None = None) -> tuple:
  """The plan's rules modules: RULES_CODE, else claims and stats."""
  return tuple((plan or {}).get("RULES_CODE", RULES_MODULES))


def rules_module(plan: dict):
  """The module whose judge(plan, records, ngram) gives the plan's verdicts."""
  import importlib
  return importlib.import_module(f"inn_jax.{rules_modules(plan)[0]}")


def rules_files(modules=RULES_MODULES) -> dict:
  """{module: sha256 of its file's content} of the rules' code."""
  import importlib
  out = {}
  for name in modules:
    module = importlib.import_module(f"inn_jax.{name}")
    out[name] = _sha(pathlib.Path(module.__file__).read_bytes())
  return out


def rules_sha256(modules=RULES_MODULES) -> str:
  return _sha(json.dumps(rules_files(modules), sort_keys=True).encode())


def registration(folder) -> dict | None:
  path = pathlib.Path(folder) / REGISTRATION
  return json.loads(path.read_text()) if path.is_file() else None


def register(folder, plan: dict, commit: str | None, corpus: dict | None = None) -> dict:
  """Writes registration.json unless it exists (with `corpus`, the corpus_record of the plan's
  data, where given); returns the registration."""
  import datetime
  found = registration(folder)
  if found is not None:
    return found
  reg = {"study": plan["NAME"], "plan_sha256": plan_sha256(plan),
         "rules_sha256": rules_sha256(rules_modules(plan)),
         "rules_files": rules_files(rules_modules(plan)), "commit": commit,
         "registered": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")}
  if corpus is not None:
    reg["corpus"] = corpus
  (pathlib.Path(folder) / REGISTRATION).write_text(json.dumps(reg, indent=1) + "\n")
  return reg


def registered_corpus(folder) -> dict | None:
  """The corpus the study registered: registration.json's record, else corpus.json's (a study
  registered before registrations held it); None when neither says."""
  reg = registration(folder) or {}
  if reg.get("corpus"):
    return reg["corpus"]
  path = pathlib.Path(folder) / CORPUS_FILE
  return _json(path) if path.is_file() else None


def corpus_differences(registered: dict, current: dict) -> list[str]:
  """The identity keys (CORPUS_IDENTITY) that both records know and that differ."""
  return [k for k in CORPUS_IDENTITY if registered.get(k) is not None
          and current.get(k) is not None and registered[k] != current[k]]


def describe_corpus(record: dict) -> str:
  """E.g. 'pydoc (sha256 ed444eb8a669..., 1,901,128 characters; 1,728,937 ids, ids sha256
  624f911028da...)'."""
  parts = []
  if record.get("sha256"):
    parts.append(f"sha256 {record['sha256'][:12]}...")
  if record.get("chars") is not None:
    parts.append(f"{record['chars']:,} characters")
  if record.get("files"):
    parts.append("files " + ", ".join(f"{k} {v[:12]}..."
                                      for k, v in sorted(record["files"].items())))
  ids = [f"{record['tokens']:,} ids" if record.get("tokens") is not None else "",
         f"ids sha256 {record['tokens_sha256'][:12]}..." if record.get("tokens_sha256") else ""]
  ids = ", ".join(i for i in ids if i)
  return (f"{record.get('name') or 'a corpus'} ({', '.join(parts)}"
          + ("; " if parts and ids else "") + ids + ")")


def changed(folder, plan: dict, recs: list | None = None) -> list[str]:
  """What differs from the registration: [] when the plan and rules are as registered (and
  every run of `recs` recorded the registered corpus, where both say); a reason per difference
  otherwise (the study has no registration: its runs have not begun)."""
  reg = registration(folder)
  if reg is None:
    return ["the study has no registration.json (no run has started)"]
  out = []
  if reg["plan_sha256"] != plan_sha256(plan):
    out.append(f"the plan's data hash is {plan_sha256(plan)[:12]}, registered "
               f"{reg['plan_sha256'][:12]}")
  now = rules_files(rules_modules(plan))
  for name, sha in sorted(reg.get("rules_files", {}).items()):
    if now.get(name) != sha:
      out.append(f"inn_jax/{name}.py's hash is {str(now.get(name))[:12]}, registered {sha[:12]}")
  if not out and reg["rules_sha256"] != rules_sha256(rules_modules(plan)):
    out.append("the rules' files differ from the registered set")
  corpus = registered_corpus(folder)
  other = [f"{r['stage']}/{r['run']}" for r in recs or () if corpus and r.get("corpus")
           and corpus_differences(corpus, r["corpus"])]
  if other:
    out.append(f"{len(other)} runs trained on another corpus than the registered "
               f"{describe_corpus(corpus)} ({', '.join(other[:3])}"
               f"{', ...' if len(other) > 3 else ''})")
  return out


def run_corpus(results: dict | None, config: dict) -> dict | None:
  """The corpus a finished run recorded: results.json's record, else config.json's (runs before
  the record: the sha256 of its ids alone); None when it recorded none."""
  from inn_jax.train import workdir as workdir_lib
  resolved = config.get("resolved") or {}
  found = (results or {}).get(workdir_lib.CORPUS_RECORD) or resolved.get(workdir_lib.CORPUS_RECORD)
  if found:
    return found
  sha = resolved.get(workdir_lib.CORPUS_KEY)
  return {"tokens_sha256": sha} if sha else None


# ------------------------------------------------------------------------------------- runs

def run_name(model: str, lr: float, seed: int) -> str:
  return f"{model}-lr{lr:g}-s{seed}"


def overrides(plan: dict, model: str, lr: float, seed: int, steps: int) -> dict:
  """The train.py keys a run sets ("--config.<key>=<value>"), the plan's model, rate and seed."""
  m = plan["MODELS"][model]
  n_eval, n_save = plan["CADENCE"]["evals"], plan["CADENCE"]["saves"]
  return {**plan["COMMON"], **m["set"], **{k: seed for k in plan["SEED_KEYS"]},
          "optim.lr": lr, "train.steps": steps, "train.eval_every": max(1, steps // n_eval),
          "train.save_every": max(1, steps // n_save)}


def _same(a, b) -> bool:
  if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
    return math.isclose(float(a), float(b), rel_tol=1e-12)
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
  return a == b


def _json(path: pathlib.Path):
  try:
    return json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise StudyError(f"{path}: cannot be read as JSON ({e}); rerun the run or remove it.")


def _curve(metrics_path: pathlib.Path) -> tuple[list, list]:
  valid, train = [], []
  for line in metrics_path.read_text().splitlines() if metrics_path.is_file() else []:
    try:
      row = json.loads(line)
    except json.JSONDecodeError:  # A torn last line of a killed run.
      continue
    if row.get("split") == "valid" and "bpc" in row:
      valid.append([row["step"], row["bpc"]])
    elif row.get("split") == "train" and "loss" in row:
      train.append([row["step"], row["loss"], row.get("time")])
  return valid, train


def records(folder, plan: dict) -> list[dict]:
  """One record per finished run under runs/ (claims.py's input), checked against the plan."""
  from inn_jax.train import workdir as workdir_lib
  root = pathlib.Path(folder) / RUNS
  out = []
  for prov_path in sorted(root.glob(f"*/*/{PROVENANCE}")):
    run = prov_path.parent
    prov = _json(prov_path)
    results = _json(run / RESULTS) if (run / RESULTS).is_file() else None
    diverged = _json(run / DIVERGED) if (run / DIVERGED).is_file() else None
    if results is None and diverged is None:
      continue  # Not finished.
    config = _json(run / CONFIG)
    flat = workdir_lib.flatten(config)
    want = overrides(plan, prov["model"], prov["lr"], prov["seed"], prov["steps"])
    bad = [f"{k}: plan {v!r}, run {flat.get(k)!r}" for k, v in want.items()
           if not _same(flat.get(k), v)]
    if bad or flat.get("name", "").rpartition(":")[2] != plan["MODELS"][prov["model"]]["variant"]:
      raise StudyError(f"{run}: the run is not what the plan says ({'; '.join(bad) or 'variant'})"
                       "; remove it and run the study again.")
    valid, train = _curve(run / METRICS)
    score = lambda s: (results or {}).get(f"{s}_bpc")
    fpt = ((results or {}).get("flops_per_token") or {}).get("train")
    analysis = _json(run / ANALYSIS) if (run / ANALYSIS).is_file() else None
    out.append({
        "stage": prov["stage"], "model": prov["model"], "kind": config.get("model", {}).get("kind"),
        "lr": prov["lr"], "seed": prov["seed"], "steps": prov["steps"], "run": run.name,
        "params": (results or {}).get("params") or prov.get("params"),
        "tokens": (results or {}).get("tokens_seen"),
        "flops_per_token": fpt,
        "train_flops": fpt * results["tokens_seen"] if fpt and results else None,
        "train_time_s": (results or {}).get("train_time_s"),
        "wall_time_s": (results or {}).get("wall_time_s"),
        "valid_bpc": score("valid"), "test_bpc": score("test"),
        "test_bpc_carried": (((results or {}).get("scores", {}).get("test") or {})
                             .get("carried") or {}).get("bpc"),
        "diverged": diverged is not None,
        "diverged_step": (diverged or {}).get("step"),
        "valid_curve": valid, "train_curve": train,
        "analysis": (analysis or {}).get("roles"), "commit": prov.get("commit"),
        "corpus": run_corpus(results, config),
    })
  return out


def ngram(folder) -> dict:
  """{order: {"valid_bpc", "test_bpc", ...}} of runs/ngram/ngram.json ({} if absent)."""
  path = pathlib.Path(folder) / RUNS / NGRAM
  if not path.is_file():
    return {}
  return {int(k): v for k, v in _json(path)["orders"].items()}


# ----------------------------------------------------------------------------------- report

def _f(v, digits=4):
  return "-" if v is None else f"{v:.{digits}f}"


def _rate(lr):
  return "-" if lr is None else f"{lr:g}"


def sweep_table(plan, recs, stage) -> list[str]:
  """Valid BPC of each model's seed-0 runs by rate, the best marked."""
  from inn_jax import claims
  rules = plan["RULES"]
  lrs = sorted({r["lr"] for r in recs if r["stage"] == stage})
  models = [m for m in _stage(plan, stage)["models"] if claims.runs(recs, stage, m)]
  lines = ["| model | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |",
           "|---|" + "---|" * len(lrs)]
  for m in models:
    best = claims.best_rate(recs, stage, m, rules["select"])
    cells = []
    for lr in lrs:
      r = claims.runs(recs, stage, m, lr, 0)
      v = None if not r else ("diverged" if r[0]["diverged"] else _f(r[0][rules["select"]]))
      cells.append("" if v is None else f"**{v}**" if math.isclose(lr, best) else v)
    lines.append(f"| {m} | " + " | ".join(cells) + " |")
  return lines


def _stage(plan, name) -> dict:
  return next(s for s in plan["STAGES"] if s["name"] == name)


def best_table(plan, recs, grams, stage) -> list[str]:
  """Each model at its best rate (mean ± sd over seeds) beside the n-gram rows."""
  from inn_jax import claims, stats
  rules = plan["RULES"]
  ref = (grams.get(rules["ngram_reference"]) or {}).get("test_bpc")
  floor = (grams.get(rules["ngram_floor"]) or {}).get("test_bpc")
  lines = ["| model | params | best peak lr | seeds | tokens | train FLOPs (matmul) | train s | "
           "test BPC, mean ± sd | flags |", "|---|---|---|---|---|---|---|---|---|"]
  for m in _stage(plan, stage).get("models", []):
    found = claims.at_best(recs, stage, m, rules)
    if not found:
      continue
    rs = list(found.values())
    s = stats.summary(claims.measure(found, rules).values())
    flags = []
    if s is not None and ref is not None and s["mean"] > ref:
      flags.append(f"worse than the {rules['ngram_reference']}-gram")
    if s is not None and floor is not None and s["mean"] >= floor:
      flags.append(f"NOT better than the {rules['ngram_floor']}-gram")
    if claims.overfits(plan, found):
      flags.append(f"over-fits (seeds {claims.overfits(plan, found)})")
    if any(r["diverged"] for r in rs):
      flags.append("diverged: " + ", ".join(f"seed {r['seed']}" for r in rs if r["diverged"]))
    flops = stats.summary(r["train_flops"] for r in rs)
    secs = stats.summary(r["train_time_s"] for r in rs)
    lines.append(f"| {m} | {rs[0]['params']:,} | {_rate(rs[0]['lr'])} | {len(rs)} | "
                 f"{rs[0]['tokens'] or 0:,} | {'-' if flops is None else f'{flops['mean']:.3g}'}"
                 f" | {'-' if secs is None else f'{secs['mean']:.0f}'} | "
                 f"{claims.cell(found, rules)} | {'; '.join(flags)} |")
  lines += ngram_rows(grams, 9)
  return lines


def ngram_rows(grams: dict, width: int) -> list[str]:
  rows = []
  for k, g in sorted(grams.items()):
    cells = [f"{k}-gram (Kneser-Ney)", f"{g.get('entries', 0):,} counts", "-", "-", "-", "-",
             "-", _f(g["test_bpc"]), "reference"]
    rows.append("| " + " | ".join(cells[:width]) + " |")
  return rows


NO_DIFFERENCE = "no difference shown"  # A tie by the rule: not an equivalence.


def pairwise(plan, recs, stage, holm: bool = False) -> list[str]:
  """Every pair of the stage's models: paired per-seed differences at their best rates (with
  `holm`, each t-test's p-value Holm-adjusted over the table's pairs, and which differences
  that count by the rule do not survive it)."""
  from inn_jax import caveats, claims, stats
  rules = plan["RULES"]
  models = [m for m in _stage(plan, stage)["models"]
            if len(claims.at_best(recs, stage, m, rules)) > 1]
  adjusted = caveats.holm_pairs(plan, recs, stage, models) if holm else {}
  lines = ["| a - b (test BPC) | difference [95% interval] | reading |"
           + (" Holm-adjusted p |" if adjusted else ""), "|---|---|---|"
           + ("---|" if adjusted else "")]
  for i, a in enumerate(models):
    for b in models[i + 1:]:
      d = claims.compare(plan, recs, stage, a, b)
      word = stats.difference(d, rules["min_effect"])
      if word == "tie":  # Interval across 0, or a difference under min_effect.
        word = (NO_DIFFERENCE if d["lo"] <= 0 <= d["hi"]
                else f"under {rules['min_effect']} BPC: does not count")
      else:
        word = {"greater": f"{b} better", "less": f"{a} better"}.get(word, "no interval")
      h = adjusted.get((a, b))
      lines.append(f"| {a} - {b} | {claims.interval(d)} | {word} |"
                   + (f" {'-' if h is None else f'{h['p_holm']:.3f}'} |" if adjusted else ""))
  if adjusted:
    alpha = 1 - rules["level"]
    lost = [f"{a} - {b}" for (a, b), h in adjusted.items() if h["counts"]
            and h["p_holm"] >= alpha]
    lines += ["", f"Holm's correction of the t-tests' p-values over the table's {len(adjusted)} "
              f"pairs (family-wise error {alpha:.2g}): "
              + (f"of the differences that count by the rule, {caveats.join(lost)} "
                 f"{'does' if len(lost) == 1 else 'do'} not survive it (adjusted p >= "
                 f"{alpha:.2g})." if lost else "every difference that counts by the rule "
                 "survives it.")]
  return lines


ARCHS = ("inn", "mamba", "lstm", "transformer")


def curve_points(plan, recs) -> dict:
  """{arch: [{"label", "params", "train_flops", "train_time_s", "test_bpc"}]}: each size of
  sweep_2m and the main comparison, at the best rate, mean over its seeds."""
  rules = plan["RULES"]
  out = {}
  for stage in [s["name"] for s in plan["STAGES"] if s["kind"] == "sweep"]:
    for m in _stage(plan, stage)["models"]:
      arch = m.split("-")[0]
      if arch not in ARCHS:
        continue
      point = _point_at_best(recs, stage, m, rules)
      if point is not None:
        del point["per_seed"]
        out.setdefault(arch, []).append({"label": f"{m} ({stage})", "stage": stage, **point})
  return out


def _point_at_best(recs, stage: str, model: str, rules: dict) -> dict | None:
  """A model's point at its best rate: its size and tokens, the mean over its seeds of the
  measure (test BPC), of training FLOPs and of train time, and each seed's measure; None
  before any of its runs at that rate is measured."""
  from inn_jax import claims, stats
  found = claims.at_best(recs, stage, model, rules)
  per_seed = claims.measure(found, rules)
  s = stats.summary(per_seed.values())
  if s is None:
    return None
  rs = list(found.values())
  mean = lambda key: stats.summary(r[key] for r in rs)["mean"] if all(
      r[key] is not None for r in rs) else None
  return {"params": rs[0]["params"], "tokens": rs[0]["tokens"],
          "train_flops": mean("train_flops"), "train_time_s": mean("train_time_s"),
          "test_bpc": s["mean"], "n": s["n"],
          "per_seed": [v for _, v in sorted(per_seed.items()) if v is not None]}


def plot_curves(points: dict, grams: dict, out: pathlib.Path) -> str:
  from inn_jax.plots import pyplot
  plt = pyplot()
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
  for ax, key, label in zip(axes, ("train_flops", "params", "train_time_s"),
                            ("training FLOPs (matmuls only)", "parameters",
                             "train time (s, 2 CPU cores)")):
    for i, arch in enumerate(ARCHS):
      for stage, marker in (("sweep_2m", "o-"), ("main_6m", "s")):
        pts = sorted((p for p in points.get(arch, []) if p["stage"] == stage and p[key]),
                     key=lambda p: p[key])
        if pts:
          ax.plot([p[key] for p in pts], [p["test_bpc"] for p in pts], marker,
                  color=f"C{i}", label=f"{arch} ({'2M' if stage == 'sweep_2m' else '6M'} tokens)")
    _reference_axes(ax, grams, {3: ":", 5: "--", 6: "-."}, label,
                    "test BPC (best rate, mean of seeds)")
  return _save(fig, axes, out / "curves.png", "BPC against compute, size and time: 30k / 100k "
               "/ 300k parameters at 2M tokens, 100k at 6M")


def _reference_axes(ax, grams: dict, orders: dict, xlabel: str, ylabel: str, base=10):
  """The n-gram rows of `orders` ({order: line style}) as gray lines; log x; labels; grid."""
  for k, ls in orders.items():
    if k in grams:
      ax.axhline(grams[k]["test_bpc"], color="gray", ls=ls, lw=0.8, label=f"{k}-gram")
  ax.set_xscale("log", base=base)
  ax.xaxis.set_minor_formatter("")  # Labelled decades only: minor labels overlap.
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)


def _save(fig, axes, path: pathlib.Path, title: str) -> str:
  """The legend on the first panel, the title; saved to `path` and closed; the file's name."""
  from inn_jax.plots import pyplot
  axes[0].legend(fontsize=7)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  pyplot().close(fig)
  return path.name


def plot_sweeps(plan, recs, out: pathlib.Path) -> list[str]:
  from inn_jax.plots import pyplot
  plt = pyplot()
  from inn_jax import claims
  names = []
  for stage in [s for s in plan["STAGES"] if s["kind"] in ("sweep", "grid")]:
    models = [m for m in stage["models"] if claims.runs(recs, stage["name"], m, seed=0)]
    if not models:
      continue
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, m in enumerate(models):
      rs = sorted(claims.runs(recs, stage["name"], m, seed=0), key=lambda r: r["lr"])
      ax.plot([r["lr"] for r in rs], [r["valid_bpc"] if r["valid_bpc"] is not None else
                                      float("nan") for r in rs], "o-", color=f"C{i % 10}",
              label=m)
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("valid BPC (seed 0)")
    ax.set_title(f"{stage['name']}: rate sweeps", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    name = f"{stage['name']}_sweeps.png"
    fig.savefig(out / name, dpi=100)
    plt.close(fig)
    names.append(name)
  return names


def population_points(plan, recs) -> dict:
  """{kind: [{"n", "params", "train_flops", "train_time_s", "test_bpc", "per_seed", "n_seeds"}]}
  of a population study (RULES["population"]: models "<kind>-n<N>"), each model at its best
  rate; {} for other studies."""
  rules = plan["RULES"]
  spec = rules.get("population")
  if not spec:
    return {}
  out = {}
  for kind in spec["kinds"]:
    for n in spec["ns"]:
      point = _point_at_best(recs, spec["stage"], f"{kind}-n{n}", rules)
      if point is not None:
        del point["tokens"]
        n_seeds, per_seed = point.pop("n"), point.pop("per_seed")
        out.setdefault(kind, []).append({"n": n, **point, "n_seeds": n_seeds,
                                         "per_seed": per_seed})
  return out


def plot_population(points: dict, grams: dict, out: pathlib.Path) -> str:
  """population.png: test BPC against N, against training FLOPs and against train time, one
  line per way of communicating (mean over seeds; each seed a dot)."""
  from inn_jax.plots import pyplot
  plt = pyplot()
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
  for ax, key, label in zip(axes, ("n", "train_flops", "train_time_s"),
                            ("neurons N (about 100k parameters, 2,048,000 tokens)",
                             "training FLOPs (matmuls only)", "train time (s, 2 CPU cores)")):
    for i, (kind, pts) in enumerate(points.items()):
      pts = [q for q in pts if q[key]]
      ax.plot([q[key] for q in pts], [q["test_bpc"] for q in pts], "o-", color=f"C{i}",
              label=kind)
      for q in pts:
        ax.plot([q[key]] * len(q["per_seed"]), q["per_seed"], ".", color=f"C{i}", alpha=0.5)
    _reference_axes(ax, grams, {4: ":", 5: "--"}, label,
                    "test BPC (best rate; line: mean, dots: seeds)", base=2 if key == "n" else 10)
  return _save(fig, axes, out / "population.png", "What the population size buys: each way of "
               "communicating, N from 4 to 256 at about 100k parameters")


def findings(plan, recs, grams) -> list[str]:
  """The headline: the main comparison's ranking and its differences, strongest first, which
  of them survive Holm's correction over its pairs, and the n-gram references by the same rule
  (a plan with its own rules module: that module's findings, with inn_jax.caveats' reading of
  the verdicts they name)."""
  from inn_jax import caveats, claims, stats
  module = rules_module(plan)
  if module is not claims:
    text = module.findings(plan, recs, grams)
    verdicts = module.judge(plan, recs, grams)
    extra = caveats.headline(caveats.notes({"plan": plan, "records": recs, "changed": [],
                                            "verdicts": verdicts}))
    return [text[0] + (" " + extra if extra else ""), *text[1:]]
  rules = plan["RULES"]
  stage = rules["c2"]["stage"]
  models = _stage(plan, stage)["models"]
  rows = []
  for m in models:
    found = claims.at_best(recs, stage, m, rules)
    s = stats.summary(claims.measure(found, rules).values())
    if s is not None:
      rows.append((s["mean"], m, s))
  if not rows:
    return ["No run of the main comparison has finished."]
  rows.sort()
  tokens = next(r["tokens"] for r in recs if r["stage"] == stage and r["tokens"])
  text = [f"At {tokens:,} training tokens, each model at its own best peak rate (test BPC, mean "
          "± sd over seeds): " + "; ".join(
              f"{m} {s['mean']:.4f}" + (f" ± {s['sd']:.4f}" if s["sd"] else "") + f" (n={s['n']})"
              for _, m, s in rows) + "."]
  diffs = []
  for i, (_, a, _) in enumerate(rows):
    for _, b, _ in rows[i + 1:]:
      d = claims.compare(plan, recs, stage, b, a)  # b - a > 0: a is better.
      if d is not None and stats.difference(d, rules["min_effect"]) == "greater":
        diffs.append((d["lo"], a, b, d))
  diffs.sort(reverse=True)
  if diffs:
    text.append("Differences that count (95% interval excludes 0, above "
                f"{rules['min_effect']} BPC), strongest first: " + "; ".join(
                    f"{a} beats {b} by {claims.interval(d)}" for _, a, b, d in diffs) + ".")
    pairs = caveats.holm_pairs(plan, recs, stage, [m for _, m, _ in rows])
    alpha = 1 - rules["level"]
    lost = [(a, b, pairs[(a, b)]["p_holm"]) for _, a, b, _ in diffs
            if (a, b) in pairs and pairs[(a, b)]["p_holm"] >= alpha]
    if pairs:
      text.append(f"With Holm's correction over the {len(pairs)} pairs, " + (
          f"{caveats.join([f'{a} beats {b}' for a, b, _ in lost])} no longer "
          f"count{'s' if len(lost) == 1 else ''} (adjusted p "
          f"{caveats.join([f'{p:.3f}' for _, _, p in lost])})." if lost
          else "every one of them still counts."))
  ties = [(a, b) for i, (_, a, _) in enumerate(rows) for _, b, _ in rows[i + 1:]
          if stats.difference(claims.compare(plan, recs, stage, b, a), rules["min_effect"])
          == "tie"]
  if ties:
    text.append("No difference that counts (not an equivalence): "
                + ", ".join(f"{a} and {b}" for a, b in ties) + ".")
  for k, chosen in _ngram_references(rules, grams):
    text.append(_against_ngram(plan, recs, stage, [m for _, m, _ in rows], grams, k, chosen))
  return [" ".join(text)]


def _ngram_references(rules, grams) -> list[tuple[int, bool]]:
  """[(order, chosen on valid)]: the plan's reference order, then the order with the lowest
  valid BPC (inn_jax.verdicts.ngram_order) where it is another."""
  from inn_jax import verdicts
  if not grams:
    return []
  try:
    chosen = verdicts.ngram_order(grams)
  except ValueError:  # A row without a valid score: the plan's reference alone.
    chosen = rules["ngram_reference"]
  out = [(k, k == chosen) for k in (rules["ngram_reference"],) if k in grams]
  return out + ([(chosen, True)] if chosen != rules["ngram_reference"] else [])


def _against_ngram(plan, recs, stage, models, grams, k, chosen) -> str:
  """One n-gram row against the models by the study's rule: each model's per-seed test BPC
  minus the n-gram's, its t-interval, read as a difference (stats.difference)."""
  from inn_jax import caveats, claims, stats
  rules, ref = plan["RULES"], grams[k]["test_bpc"]
  beat, worse, open_ = [], [], []
  for m in models:
    per_seed = [v for v in claims.measure(claims.at_best(recs, stage, m, rules), rules).values()
                if v is not None]
    d = stats.t_interval([v - ref for v in per_seed], rules["level"])
    word = stats.difference(d, rules["min_effect"])
    (beat if word == "less" else worse if word == "greater" else open_).append((m, d))
  name = f"{k}-gram"
  orders = sorted(grams)
  run = (f"{orders[0]}-{orders[-1]}" if orders == list(range(orders[0], orders[-1] + 1))
         else ", ".join(map(str, orders)))
  out = (f"The Kneser-Ney {name}"
         + (f", the order with the lowest valid BPC (of {run})," if chosen else "")
         + f" scores {ref:.4f}: " + (
             f"{caveats.join([m for m, _ in beat])} beat{'s' if len(beat) == 1 else ''} it by "
             "the study's rule" if beat else "no model beats it by the study's rule"))
  details = [f"{m} - {name} {claims.interval(d)}: a {'lower' if d['mean'] < 0 else 'higher'} "
             "mean, not a difference" for m, d in open_ if d]
  if worse:
    details.append(f"{caveats.join([m for m, _ in worse])} {'is' if len(worse) == 1 else 'are'} "
                   "worse")
  return out + (f" ({'; '.join(details)})" if details else "") + "."


def build(folder, plan=None) -> dict:
  folder = pathlib.Path(folder)
  plan = plan or load_plan(folder)
  recs = records(folder, plan)
  grams = ngram(folder)
  diff = changed(folder, plan, recs)
  verdicts = rules_module(plan).judge(plan, recs, grams)
  if diff:
    text = (PENDING if registration(folder) is None else f"{WITHHELD} ({'; '.join(diff)})")
    for v in verdicts.values():
      v["verdict"] = text
  return {"plan": plan, "records": recs, "ngram": grams, "changed": diff,
          "verdicts": verdicts, "registration": registration(folder)}


def unfinished(plan, recs) -> list[str]:
  """The sweep stages' models whose runs are not all in: a rate of the sweep at seed 0, or a
  further seed at the best rate (the driver runs an edge's extension before those seeds)."""
  from inn_jax import claims
  out = []
  for stage in [s for s in plan["STAGES"] if s["kind"] == "sweep"]:
    for m in stage["models"]:
      lr = claims.best_rate(recs, stage["name"], m, plan["RULES"]["select"])
      done = all(claims.runs(recs, stage["name"], m, rate, 0) for rate in stage["rates"])
      if m in stage.get("seeds_at_best_models", stage["models"]):
        done = done and all(claims.runs(recs, stage["name"], m, lr, seed)
                            for seed in stage.get("seeds_at_best", []))
      if not done:
        out.append(f"{stage['name']}/{m}")
  return out


def _status(rep: dict) -> list[str]:
  """The registration's sentence (or why verdicts are pending or withheld), then the runs'
  (and, while some model's runs are missing, that every row and verdict is provisional)."""
  reg, recs = rep["registration"] or {}, rep["records"]
  if reg == {}:
    lines = [f"**Verdicts pending**: no run has started, so the study has no registration.", ""]
  elif rep["changed"]:
    lines = [f"**Verdicts withheld**: {'; '.join(rep['changed'])}. The rules or the plan "
             "changed after the runs began; a changed rule is a new study (a new folder).", ""]
  else:
    lines = [f"Registered at the first run ({reg.get('registered')}, commit "
             f"{str(reg.get('commit'))[:10]}): plan {reg.get('plan_sha256', '')[:12]}, rules "
             f"{reg.get('rules_sha256', '')[:12]}; both unchanged, so the verdicts below stand.",
             ""]
  commits = sorted({r["commit"] for r in recs if r["commit"]})
  return lines + [
      f"{len(recs)} runs finished (trained at commit{'s' if len(commits) > 1 else ''} "
      f"{', '.join(c[:10] for c in commits) or '-'}), "
      f"{sum(r['train_time_s'] or 0 for r in recs) / 3600:.2f} h of training on "
      f"{'2 CPU cores' if recs else '-'}. Every number is test BPC with a fresh state per "
      "window on the whole split, from the run's best checkpoint (by periodic "
      "validation); each model at its own best peak rate (chosen on valid, seed 0). "
      "Intervals: 95% t-intervals of paired per-seed differences (seed s of both models "
      "saw the same data order).", "",
      *_in_progress(rep)]


def _in_progress(rep: dict) -> list[str]:
  missing = unfinished(rep["plan"], rep["records"]) if rep["records"] else []
  if not missing:
    return []
  models = sum(len(s["models"]) for s in rep["plan"]["STAGES"] if s["kind"] == "sweep")
  return [f"**In progress**: {models - len(missing)} of {models} models have all their runs; "
          f"{len(missing)} have some or none ({', '.join(missing)}). Until they finish, a "
          "model's best rate, its row and every verdict that reads it are provisional.", ""]


def _verdicts(rep: dict, level: str) -> list[str]:
  """The verdicts' table, then each claim or question with its rule and intervals; beside a
  verdict, as computed, what inn_jax.caveats says of it."""
  from inn_jax import caveats
  module = rules_module(rep["plan"])
  notes = caveats.notes(rep)
  lines = ["| claim | verdict | rule |", "|---|---|---|"]
  for k, v in rep["verdicts"].items():
    note = caveats.beside(notes.get(k))
    lines.append(f"| {k} | **{v['verdict']}**{f' ({note})' if note else ''} | {v['rule']} |")
  lines.append("")
  titles = getattr(module, "CLAIMS", None) or getattr(module, "QUESTIONS")
  for k, v in rep["verdicts"].items():
    text = notes.get(k, {}).get("text", [])
    lines += [f"{level} {k}: {titles[k]}", "", f"Verdict: **{v['verdict']}**. Rule: "
              f"{v['rule']}.", "", *(f"{t}\n" for t in text),
              *caveats.apply(v["lines"], notes.get(k)), ""]
  return lines


def _summary_table(rep: dict, rel, plots: dict) -> list[str]:
  """The study's own summary table (population: N x kind) and its figure, if it has one."""
  module, plan = rules_module(rep["plan"]), rep["plan"]
  if not hasattr(module, "table"):
    return []
  lines = ["Test BPC at each model's best rate, mean ± sd (seeds):", "",
           *module.table(plan, rep["records"]), ""]
  if "population" in plots:
    lines += [f"![population]({rel(plots['population'])})", ""]
  return lines


# A study summarised as a section of another's RESULTS.md (--section) goes under this title;
# benchmarks/study.py puts each study named here into the repository's RESULTS.md.
SECTION_TITLES = {"population-v1": "Scaling the population"}


def section_markdown(rep: dict, folder: pathlib.Path, base: pathlib.Path, plots: dict) -> str:
  """One study as a section of RESULTS.md: where it lives, its status, headline, verdicts,
  summary table and figure; its full report (every sweep and paired difference) is linked."""
  plan = rep["plan"]
  rel = lambda p: os.path.relpath(folder / p, base)
  title = SECTION_TITLES.get(plan["NAME"], f"The study `{plan['NAME']}`")
  lines = [f"## {title}", "",
           f"The study `{plan['NAME']}`: its plan, committed before the first run, is "
           f"[`{rel(PLAN_FILE)}`]({rel(PLAN_FILE)}); its full report, with every sweep and "
           f"paired difference, is [`{rel('report.md')}`]({rel('report.md')}).", "",
           *_status(rep), *findings(plan, rep["records"], rep["ngram"]), "",
           *_verdicts(rep, "###"), *_summary_table(rep, rel, plots)]
  return "\n".join(lines) + "\n"


def results_markdown(rep: dict, folder: pathlib.Path, base: pathlib.Path, plots: dict,
                     sections: tuple = ()) -> str:
  """RESULTS.md: the headline, the verdicts with their intervals, every table and figure (and,
  after them, each of `sections`' folders summarised by section_markdown)."""
  from inn_jax import claims
  module = rules_module(plan := rep["plan"])
  plan, recs, grams = rep["plan"], rep["records"], rep["ngram"]
  rel = lambda p: os.path.relpath(folder / p, base)
  also = "".join(f" --section {os.path.relpath(pathlib.Path(f), base)}" for f in sections)
  lines = [f"# Results: the study `{plan['NAME']}`", "",
           f"Generated by `python -m inn_jax.studies {rel('.')} --results_md RESULTS.md{also}` "
           f"from the runs' files in `{rel(RUNS)}/`; the plan, committed before the first run, is "
           f"[`{rel(PLAN_FILE)}`]({rel(PLAN_FILE)}). Do not edit.", "",
           *_status(rep), "## What the data show", "", *findings(plan, recs, grams), "",
           "## The paper's claims" if module is claims else "## The study's questions", "",
           *_verdicts(rep, "###"), "## Tables", "", *_summary_table(rep, rel, plots)]
  for stage in plan["STAGES"]:
    name = stage["name"]
    if stage["kind"] == "ngram" or not any(r["stage"] == name for r in recs):
      continue
    lines += [f"### {name}", ""]
    if stage["kind"] in ("sweep", "grid"):
      lines += ["Valid BPC of the seed-0 runs by peak rate (bold: the best):", "",
                *sweep_table(plan, recs, name), ""]
    if stage["kind"] == "sweep":
      headline_stage = module is claims and name == plan["RULES"]["c2"]["stage"]
      lines += ["At the best rate:", "", *best_table(plan, recs, grams, name), "",
                "Paired differences:", "", *pairwise(plan, recs, name, holm=headline_stage),
                ""]
    for png in plots.get(name, []):
      lines += [f"![{name}]({rel(png)})", ""]
  if grams:
    lines += ["### The n-gram reference", "", "| order | valid BPC | test BPC | test, context "
              "carried |", "|---|---|---|---|"]
    lines += [f"| {k} | {_f(g['valid_bpc'])} | {_f(g['test_bpc'])} | "
              f"{_f(g['scores']['test']['carried']['bpc'])} |" for k, g in sorted(grams.items())]
    lines.append("")
  if "curves" in plots:
    lines += ["### Curves", "", "Each architecture at about 30k, 100k and 300k parameters "
              "(2,048,000 tokens) and at 100k with 6,144,000 tokens, each point at its best rate. "
              "FLOPs count matmuls only (not the selective scan's elementwise recurrence, "
              "which the Mamba stack and the INN also do), so the train-time panel is beside "
              "them.", "", f"![curves]({rel(plots['curves'])})", ""]
  return "\n".join(lines) + "\n"


def plot_names(rep: dict) -> dict:
  """{stage: [its PNG]} and "curves": the figures the report draws for these records."""
  from inn_jax import claims
  plan, recs = rep["plan"], rep["records"]
  names = {s["name"]: [f"{s['name']}_sweeps.png"] for s in plan["STAGES"]
           if s["kind"] in ("sweep", "grid")
           and any(claims.runs(recs, s["name"], m, seed=0) for m in s["models"])}
  if curve_points(plan, recs):
    names["curves"] = "curves.png"
  if population_points(plan, recs):
    names["population"] = "population.png"
  return names


def markdown_files(folder, results_md=None, rep=None, sections=(), section_reps=()) -> dict:
  """{path: text} of report.md (and RESULTS.md, with each folder of `sections` summarised after
  the study's own results): what write() writes, without drawing. rep and section_reps (one
  per section) are the built reports where the caller has them; else they are built here."""
  folder = pathlib.Path(folder)
  rep = rep or build(folder)
  plots = plot_names(rep)
  out = {folder / "report.md": results_markdown(rep, folder, folder, plots)}
  if results_md:
    results_md = pathlib.Path(results_md)
    base = results_md.absolute().parent
    text = results_markdown(rep, folder, base, plots, sections)
    section_reps = list(section_reps) or [build(sec) for sec in sections]
    for sec, sec_rep in zip(map(pathlib.Path, sections), section_reps, strict=True):
      text += "\n" + section_markdown(sec_rep, sec, base, plot_names(sec_rep))
    out[results_md] = text
  return out


HEADLINE = ("<!-- headline:", "<!-- /headline -->")


def readme_with_headline(text: str, headline: str) -> str:
  """`text` with the block between the headline markers replaced by `headline`."""
  start, end = text.find(HEADLINE[0]), text.find(HEADLINE[1])
  if start < 0 or end < start:
    raise StudyError(f"the README has no {HEADLINE[0]} ... {HEADLINE[1]} block for the headline.")
  line_end = text.index("\n", start) + 1
  return text[:line_end] + headline.strip() + "\n" + text[end:]


def headline(rep: dict) -> str:
  return findings(rep["plan"], rep["records"], rep["ngram"])[0]


def write(folder, results_md=None, readme=None, sections=()) -> dict:
  """report.md, report.json, the PNGs in the study folder, and RESULTS.md if asked (each of
  `sections` written first, its summary a section of RESULTS.md)."""
  folder = pathlib.Path(folder)
  section_reps = [write(sec) for sec in sections]
  rep = build(folder)
  drawn = plot_sweeps(rep["plan"], rep["records"], folder)
  points = curve_points(rep["plan"], rep["records"])
  if points:
    drawn.append(plot_curves(points, rep["ngram"], folder))
  population = population_points(rep["plan"], rep["records"])
  if population:
    drawn.append(plot_population(population, rep["ngram"], folder))
  for path, text in markdown_files(folder, results_md, rep, sections, section_reps).items():
    path.write_text(text)
  if readme:
    readme = pathlib.Path(readme)
    readme.write_text(readme_with_headline(readme.read_text(), headline(rep)))
  public = {k: v for k, v in rep.items() if k != "plan"}
  public["curves"] = points
  if population:
    public["population"] = population
  public["records"] = [{k: v for k, v in r.items() if k != "train_curve"} for r in rep["records"]]
  (folder / "report.json").write_text(json.dumps(public, indent=1, default=str) + "\n")
  return rep


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m inn_jax.studies",
                              description=__doc__.split("\n")[0])
  p.add_argument("study", help="a study folder (plan.py, runs/)")
  p.add_argument("--results_md", help="also write RESULTS.md here")
  p.add_argument("--readme", help="a README whose headline block gets the report's headline")
  p.add_argument("--section", action="append", default=[],
                 help="another study folder, its report written and summarised as a section "
                 "of RESULTS.md (repeatable; needs --results_md)")
  args = p.parse_args(sys.argv[1:] if argv is None else argv)
  if args.section and not args.results_md:
    print("error: --section needs --results_md (the file the sections go into); add "
          "--results_md RESULTS.md.", file=sys.stderr)
    sys.exit(2)
  try:
    rep = write(args.study, args.results_md, args.readme, tuple(args.section))
  except StudyError as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    sys.exit(2)
  print(f"wrote {pathlib.Path(args.study) / 'report.md'} ({len(rep['records'])} runs)"
        + (f" and {args.results_md}" if args.results_md else ""))
  return rep


if __name__ == "__main__":
  main()
