"""Runs a pre-registered study: every run of its plan with train.py, then its report.

    python benchmarks/study.py                       # benchmarks/studies/claims-v2: train what is
                                                     # missing, then RESULTS.md
    python benchmarks/study.py --dry_run             # every run with its estimated time
    python benchmarks/study.py --measure             # time 30 steps of each model first
    python benchmarks/study.py --only 'main_6m/*'    # a subset (globs over <stage>/<run>)
    python benchmarks/study.py --study DIR           # another study folder (DIR/plan.py)

The study folder holds plan.py (committed before the first run; inn_jax/studies.py reads it as
data). When the first run starts, registration.json records the hash of the plan's data and of
the rules' code (inn_jax/claims.py, inn_jax/stats.py) and the commit; later invocations refuse to
train when either hash differs (a changed plan or rule is a new study: a new folder), and the
report withholds the verdicts. The registration also records the corpus the plan's data keys
load (its name, text sha256 and length, and the sha256 of its ids: inn_jax.train.workdir.
corpus_record), and no run starts or resumes on another corpus (a different text is a new study);
a study registered before that has corpus.json beside registration.json instead, written once by
--record_corpus from what its runs recorded. Runs are refused on a checkout with uncommitted
changes to the code or the plan (--allow_dirty for trials), so each run's provenance.json names
the commit its numbers come from.

Stages run in the plan's order. `sweep`: each model's seed-0 runs at the plan's rates; where the
best valid BPC is at an end of the range, one more rate beyond it; then the seeds at the best
rate (after every model's sweep; with "order": "model", each model's right after its own sweep,
so a costly model placed last holds up no other's results). `grid`: every rate, extra seeds at
the named rates. `fixed`: one rate (or the best rate of another stage's model) and the seeds. `ngram`: python -m inn_jax.ngram. A run is
`python train.py --config <CONFIG>:<variant> --config.<key>=<value> ...` in its own scratch
workdir (--scratch; checkpoints, not committed), resumed if interrupted; finished, its small
files are copied to <study>/runs/<stage>/<model>-lr<rate>-s<seed>/ with provenance.json, paths
made relative to the repository. A run that stops on a non-finite loss is a result (diverged.json).
A run whose folder holds results.json or diverged.json is not run again.

Estimates: --measure trains each model 30 steps into <study>/timing.json (seconds per step and
the fixed cost: start-up, compilation, evaluation); --dry_run lists every run: the sweeps' runs,
the one extension a sweep may need (counted, as if every sweep needed it) and the seeds at the
best rate (known after the sweep).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # Run from a clone: the inn_jax beside this script.

from inn_jax import studies  # noqa: E402

DEFAULT = REPO / "benchmarks" / "studies" / "claims-v2"
# The studies RESULTS.md summarises after the default study's results, each a section: those
# the report has a section title for.
RESULTS_SECTIONS = [REPO / "benchmarks" / "studies" / name for name in studies.SECTION_TITLES]
KEEP = ("results.json", "diverged.json", "metrics.jsonl", "config.json", "vocab.json",
        "summary.json")
MEASURE_STEPS = 30
DIVERGED = "stopped without applying that update"  # inn_jax.train.loop.check_finite's words.
# What a run's numbers depend on: uncommitted changes here refuse the study (--allow_dirty).
CODE = ("inn_jax", "configs", "train.py", "benchmarks/study.py")


class StudyError(ValueError):
  """Bad input or a failed run: one line, exit status 2."""


def commit_of(repo: pathlib.Path, plan_path: pathlib.Path) -> tuple[str | None, bool]:
  """(HEAD's commit, whether the code or the plan has uncommitted changes); (None, False)
  outside a git checkout."""
  head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
  if head.returncode:
    return None, False
  paths = [*CODE, str(plan_path.relative_to(repo)) if plan_path.is_relative_to(repo) else None]
  status = subprocess.run(["git", "status", "--porcelain", "--", *filter(None, paths)],
                          cwd=repo, capture_output=True, text=True)
  return head.stdout.strip(), bool(status.stdout.strip())


def _relative(value, roots):
  """Absolute paths inside `roots` made relative; the interpreter's path as `python`."""
  if isinstance(value, dict):
    return {k: _relative(v, roots) for k, v in value.items()}
  if isinstance(value, list):
    return [_relative(v, roots) for v in value]
  if isinstance(value, str):
    value = value.replace(sys.executable, "python")
    for root in roots:
      value = value.replace(str(root) + "/", "").replace(str(root), ".")
  return value


def _copy_json(src: pathlib.Path, dst: pathlib.Path, roots):
  if src.suffix == ".jsonl":
    dst.write_text(src.read_text())
  else:
    dst.write_text(json.dumps(_relative(json.loads(src.read_text()), roots), indent=1) + "\n")


class Study:
  def __init__(self, folder: pathlib.Path, scratch: pathlib.Path, allow_dirty: bool):
    self.folder, self.scratch = folder, scratch
    self.plan = studies.load_plan(folder)
    self.timing_file = folder / "timing.json"
    self.timing = (json.loads(self.timing_file.read_text()) if self.timing_file.is_file()
                   else {})
    self.allow_dirty = allow_dirty
    self.trained = 0
    self._corpus = None
    # Paths in the committed files: relative to the repository (or to the folder holding a
    # study kept elsewhere), never the machine's absolute ones.
    self.roots = [REPO] if folder.is_relative_to(REPO) else [folder.parent, REPO]

  # ------------------------------------------------------------------------------ commands
  def command(self, model: str, lr: float, seed: int, steps: int, workdir) -> list[str]:
    m = self.plan["MODELS"][model]
    opts = studies.overrides(self.plan, model, lr, seed, steps)
    opts.update({"log.progress": False, "log.tensorboard": False})
    return [sys.executable, str(REPO / "train.py"), "--config",
            f"{self.plan['CONFIG']}:{m['variant']}", "--workdir", str(workdir),
            *(f"--config.{k}={v}" for k, v in opts.items())]

  def ngram_command(self, stage) -> list[str]:
    keys = {k: v for k, v in self.plan["COMMON"].items() if k.startswith("data.")}
    return [sys.executable, "-m", "inn_jax.ngram", "--orders",
            ",".join(map(str, stage["orders"])), "--out", str(self.folder / "runs" / "ngram"),
            "--config", self.plan["CONFIG"], *(f"--config.{k}={v}" for k, v in keys.items())]

  def estimate(self, model: str, steps: int) -> float | None:
    t = self.timing.get(model)
    return t and t["fixed_s"] + steps * t["step_s"]

  # ---------------------------------------------------------------------------------- runs
  def folder_of(self, stage: str, model: str, lr: float, seed: int) -> pathlib.Path:
    return self.folder / "runs" / stage / studies.run_name(model, lr, seed)

  @staticmethod
  def done(folder: pathlib.Path) -> bool:
    return (folder / "results.json").is_file() or (folder / "diverged.json").is_file()

  def record(self, stage, model, lr, seed):
    """The run's valid BPC (None: diverged), or raises KeyError when it has not run."""
    folder = self.folder_of(stage, model, lr, seed)
    if (folder / "diverged.json").is_file():
      return None
    return json.loads((folder / "results.json").read_text())["valid_bpc"]

  def corpus(self) -> dict:
    """The corpus_record of the corpus the plan's runs would read here (loaded once)."""
    if self._corpus is None:
      from inn_jax import data
      from inn_jax.train import config as config_lib
      from inn_jax.train import workdir as workdir_lib
      model = next(iter(self.plan["MODELS"]))
      keys = {k: v for k, v in studies.overrides(self.plan, model, 1e-3, 0, 1).items()
              if k.startswith("data.")}
      config = pathlib.Path(self.plan["CONFIG"])
      spec = f"{config if config.is_absolute() else REPO / config}:" \
             f"{self.plan['MODELS'][model]['variant']}"
      try:
        cfg = config_lib.from_argv(["--config", spec, *(f"--config.{k}={v}"
                                                         for k, v in keys.items())])
        corpus = data.load_corpus(cfg.data)
      except (ValueError, FileNotFoundError) as e:
        raise StudyError(f"{self.folder.name}: the plan's corpus cannot be read: {e}") from None
      self._corpus = workdir_lib.corpus_record(corpus)
    return self._corpus

  def check_corpus(self):
    """Refuses a corpus other than the registered one (or a registered study without a corpus
    record): a different text is a new study."""
    name = self.plan["NAME"]
    registered = studies.registered_corpus(self.folder)
    if registered is None:
      raise StudyError(
          f"{name}: the study was registered without a record of its corpus (no corpus in "
          f"{studies.REGISTRATION}, no {studies.CORPUS_FILE}); write it once from what its runs "
          f"recorded: python benchmarks/study.py --study {self.folder} --record_corpus")
    current = self.corpus()
    diff = studies.corpus_differences(registered, current)
    if diff:
      where = ("the shipped inn_jax/data/pydoc.txt.xz and the inn_jax it came with"
               if registered.get("name") == "pydoc" else "the registered data")
      raise StudyError(
          f"{name}: the corpus here is {studies.describe_corpus(current)}, but the study "
          f"registered {studies.describe_corpus(registered)} (differs: {', '.join(diff)}); "
          f"train on the registered corpus (restore {where}), or a different corpus is a new "
          "study: copy plan.py to a new folder and run that.")

  def _start(self):
    """Before the first run: the registration, and the checks that it still holds."""
    commit, dirty = commit_of(REPO, self.folder / studies.PLAN_FILE)
    if dirty and not self.allow_dirty:
      raise StudyError("uncommitted changes to the code or the plan (git status -- "
                       f"{' '.join(CODE)} and the plan): commit them first, so that each run "
                       "names the commit its numbers come from (or --allow_dirty for a trial).")
    studies.register(self.folder, self.plan, commit, corpus=self.corpus())
    diff = studies.changed(self.folder, self.plan)
    if diff:
      raise StudyError(f"{self.folder}: {'; '.join(diff)} since the study's first run; a changed "
                       "plan or rule is a new study: copy plan.py to a new folder and run that.")
    self.check_corpus()
    return commit, dirty

  def record_corpus(self) -> pathlib.Path:
    """corpus.json of a study registered before registrations held the corpus: this corpus's
    record, written once, and only if every finished run recorded these ids."""
    path = self.folder / studies.CORPUS_FILE
    reg = studies.registration(self.folder)
    if reg is None:
      raise StudyError(f"{self.plan['NAME']}: no {studies.REGISTRATION}; the first run "
                       "registers the corpus with the study.")
    if studies.registered_corpus(self.folder) is not None:
      raise StudyError(f"{self.plan['NAME']}: the corpus is already recorded "
                       f"({studies.CORPUS_FILE if path.is_file() else studies.REGISTRATION}).")
    current = self.corpus()
    recs = studies.records(self.folder, self.plan)
    known = [r for r in recs if r["corpus"]]
    other = [f"{r['stage']}/{r['run']}" for r in known
             if studies.corpus_differences(r["corpus"], current)]
    if not known or other:
      raise StudyError(
          f"{self.plan['NAME']}: " + (f"{len(other)} of its runs ({', '.join(other[:3])}) "
                                      "recorded another corpus" if other else
                                      "no run recorded its corpus")
          + f" than the one here, {studies.describe_corpus(current)}; corpus.json must say "
          "what the runs trained on: write it by hand from their records.")
    from inn_jax.data import text as text_lib
    record = {"study": self.plan["NAME"], **current}
    if current["name"] == "pydoc":
      record["python"] = f"CPython {text_lib.PYDOC_PYTHON}"
      record["source"] = text_lib.pydoc_source()
    record["evidence"] = (f"all {len(known)} finished runs of the study recorded these ids "
                          f"(config.json resolved.corpus_sha256 {current['tokens_sha256'][:12]}"
                          "...); written after the registration, which predates corpus records")
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path

  def run(self, stage: str, model: str, lr: float, seed: int, steps: int, analyze=False):
    folder = self.folder_of(stage, model, lr, seed)
    work = self.scratch / stage / folder.name
    if not self.done(folder):
      commit, dirty = self._start()
      cmd = self.command(model, lr, seed, steps, work)
      est = self.estimate(model, steps)
      print(f"run {stage}/{folder.name}" + (f" (estimated {est:.0f} s)" if est else ""),
            flush=True)
      print("  " + shlex.join(cmd), flush=True)
      proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True)
      try:
        _, err = proc.communicate()
      except KeyboardInterrupt:  # train.py saves on SIGINT, then exits: let it.
        proc.communicate()
        raise StudyError(f"interrupted during {stage}/{folder.name}; run the study again to "
                         "resume it.")
      folder.mkdir(parents=True, exist_ok=True)
      if proc.returncode == 2 and DIVERGED in err:
        line = _tail(err)
        step = re.search(r"at step (\d+)", line)
        (work / "diverged.json").write_text(json.dumps(
            {"diverged": True, "step": int(step.group(1)) if step else None, "message": line,
             "command": shlex.join(cmd)}, indent=1) + "\n")
        print(f"  diverged: {line}", flush=True)
      elif proc.returncode or not (work / "results.json").is_file():
        raise StudyError(f"{stage}/{folder.name}: train.py exited {proc.returncode}: "
                         f"{_tail(err)} (run the study again to resume it)")
      prov = {"stage": stage, "model": model, "lr": lr, "seed": seed, "steps": steps,
              "commit": commit, "dirty": dirty, "command": shlex.join(cmd)}
      (folder / studies.PROVENANCE).write_text(
          json.dumps(_relative(prov, self.roots), indent=1) + "\n")
      for name in KEEP:
        if (work / name).is_file():
          _copy_json(work / name, folder / name, self.roots)
      self.trained += 1
    if (analyze and not (folder / studies.ANALYSIS).is_file()
        and (folder / "results.json").is_file()):
      self.analyze(work, folder)

  def analyze(self, work: pathlib.Path, folder: pathlib.Path):
    r = self.plan["RULES"]["c4"]
    cmd = [sys.executable, "-m", "inn_jax.analyze", "--workdir", str(work), "--split", r["split"],
           "--max_tokens", str(r["max_tokens"]), "--out", str(folder / "analysis"), "--null",
           "--hub", str(r["hub"]), "--specialist", str(r["specialist"]), "--null_quantile",
           str(r["quantile"]), "--null_level", str(r["level"]), "--null_bootstrap",
           str(r["bootstrap"]), "--null_shuffles", str(r["shuffles"])]
    print(f"analyse {folder.parent.name}/{folder.name}", flush=True)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
      raise StudyError(f"analysis of {folder.name} failed: {_tail(proc.stderr or proc.stdout)}")
    path = folder / studies.ANALYSIS
    _copy_json(path, path, self.roots)

  # -------------------------------------------------------------------------------- stages
  def stage_runs(self, stage: dict, dry: bool):
    """Yields (model, lr, seed, steps, note) in order; in a dry run the rates that depend on
    results are those known, else the plan's guesses, with the note saying so."""
    name, kind = stage["name"], stage["kind"]
    steps = stage.get("steps")
    if kind == "fixed":
      lr, note = stage.get("rate"), ""
      if lr is None:
        src = stage["rate_from"]
        lr = self.best(src["stage"], src["model"], _stage(self.plan, src["stage"]))
        if lr is None:
          if not dry:
            raise StudyError(f"{name}: needs the best rate of {src['model']} in {src['stage']}, "
                             "which has not run.")
          lr, note = _stage(self.plan, src["stage"])["rates"][0], "(at the best rate of " \
              f"{src['model']} in {src['stage']})"
      for m in stage["models"]:
        for seed in stage["seeds"]:
          yield m, lr, seed, steps, note
    elif kind == "grid":
      for m in stage["models"]:
        for lr in stage["rates"]:
          for seed in stage["seeds"]:
            yield m, lr, seed, steps, ""
        for lr in stage["extra_seeds"]["rates"]:
          for seed in stage["extra_seeds"]["seeds"]:
            yield m, lr, seed, steps, ""
    elif kind == "sweep":
      order = stage.get("order", "stage")
      if order not in ("stage", "model"):
        raise StudyError(f"{name}: order={order!r}; use 'stage' (every sweep, then every "
                         "model's seeds) or 'model' (each model's sweep and seeds in turn).")
      seeded = stage.get("seeds_at_best_models", stage["models"])
      for m in stage["models"]:
        yield from self.sweep_runs(stage, m, dry)
        if order == "model" and m in seeded:
          yield from self.seed_runs(stage, m, dry)
      if order == "stage":
        for m in seeded:
          yield from self.seed_runs(stage, m, dry)

  def sweep_runs(self, stage: dict, m: str, dry: bool):
    """A sweep stage's seed-0 runs of model m: the plan's rates, then the extension if any."""
    name, steps = stage["name"], stage.get("steps")
    for lr in stage["rates"]:
      yield m, lr, 0, steps, ""
    ext = self.extension(name, m, stage)
    if ext is not None:
      yield m, ext, 0, steps, "(one more rate: the best was at an end)"
    elif dry and not self.swept(name, m, stage):
      yield m, stage["extend"]["above"], 0, steps, "(if the best is at an end: one more rate)"

  def seed_runs(self, stage: dict, m: str, dry: bool):
    """A sweep stage's further seeds of model m at its best rate (known once it has swept)."""
    name, steps = stage["name"], stage.get("steps")
    lr = self.best(name, m, stage)
    note = ""
    if lr is None:
      if not dry:
        raise StudyError(f"{name}/{m}: its sweep has not finished.")
      lr, note = stage["rates"][0], "(at the best rate, known after the sweep)"
    for seed in stage["seeds_at_best"]:
      yield m, lr, seed, steps, note

  def swept(self, stage, model, spec) -> bool:
    try:
      for lr in spec["rates"]:
        self.record(stage, model, lr, 0)
      return True
    except (KeyError, FileNotFoundError):
      return False

  def _best_of(self, stage, model, rates):
    vals = {lr: self.record(stage, model, lr, 0) for lr in rates}
    return min(rates, key=lambda lr: (math.inf if vals[lr] is None else vals[lr], lr))

  def extension(self, stage, model, spec):
    """The extra rate when the sweep's best is at an end; None before the sweep or if inside."""
    if not self.swept(stage, model, spec):
      return None
    rates = sorted(spec["rates"])
    best = self._best_of(stage, model, rates)
    if best == rates[0]:
      return spec["extend"]["below"]
    if best == rates[-1]:
      return spec["extend"]["above"]
    return None

  def best(self, stage, model, spec):
    if not self.swept(stage, model, spec):
      return None
    rates = sorted(spec["rates"])
    ext = self.extension(stage, model, spec)
    if ext is not None:
      try:
        self.record(stage, model, ext, 0)
      except (KeyError, FileNotFoundError):
        return None
      rates.append(ext)
    return self._best_of(stage, model, rates)

  def execute(self, only, dry: bool) -> list[dict]:
    listed = []
    for stage in self.plan["STAGES"]:
      if stage["kind"] == "ngram":
        out = self.folder / "runs" / "ngram" / "ngram.json"
        listed.append({"where": "ngram/ngram.json", "estimate_s": 10.0, "done": out.is_file(),
                       "note": ""})
        if not dry and not out.is_file() and _match(only, "ngram/ngram"):
          self._start()
          cmd = self.ngram_command(stage)
          print("run ngram\n  " + shlex.join(cmd), flush=True)
          proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
          if proc.returncode:
            raise StudyError(f"ngram: {_tail(proc.stderr)}")
          _copy_json(out, out, self.roots)
        continue
      seen = set()
      for m, lr, seed, steps, note in self.stage_runs(stage, dry):
        where = f"{stage['name']}/{studies.run_name(m, lr, seed)}"
        if where in seen or not _match(only, where):
          continue
        seen.add(where)
        folder = self.folder_of(stage["name"], m, lr, seed)
        listed.append({"where": where, "estimate_s": self.estimate(m, steps), "note": note,
                       "done": self.done(folder)})
        if not dry:
          self.run(stage["name"], m, lr, seed, steps, analyze=stage.get("analyze", False))
    return listed

  def measure(self):
    """Each model's seconds per step and fixed cost, from a MEASURE_STEPS-step run."""
    for m in self.plan["MODELS"]:
      if m in self.timing:
        continue
      work = self.scratch / "_timing" / m
      shutil.rmtree(work, ignore_errors=True)
      print(f"measuring {m} ({MEASURE_STEPS} steps)", flush=True)
      proc = subprocess.run(self.command(m, 1e-3, 0, MEASURE_STEPS, work), cwd=REPO,
                            capture_output=True, text=True)
      if proc.returncode:
        raise StudyError(f"measuring {m} failed: {_tail(proc.stderr or proc.stdout)}")
      r = json.loads((work / "results.json").read_text())
      self.timing[m] = {"params": r["params"], "step_s": r["train_time_s"] / r["steps"],
                        "fixed_s": r["wall_time_s"] - r["train_time_s"],
                        "device_kind": r["device_kind"]}
      shutil.rmtree(work, ignore_errors=True)
      self.timing_file.write_text(json.dumps(self.timing, indent=1) + "\n")


def _stage(plan, name):
  return next(s for s in plan["STAGES"] if s["name"] == name)


def _match(only, where) -> bool:
  return not only or any(fnmatch.fnmatch(where, g) for g in only)


def _tail(text: str) -> str:
  """The error line of a finished process's output (else its last lines)."""
  lines = (text or "").strip().splitlines()
  errors = [l for l in lines if l.startswith("error:")]
  return (errors[-1] if errors else " ".join(lines[-3:]))[-800:]


def _main(argv):
  p = argparse.ArgumentParser(prog="benchmarks/study.py", description=__doc__.split("\n")[0])
  p.add_argument("--study", help=f"the study folder (default {DEFAULT.relative_to(REPO)})")
  p.add_argument("--scratch", help="train.py's workdirs, checkpoints (default workdirs/<name>)")
  p.add_argument("--results_md", help="where RESULTS.md goes (default: the repository's, for "
                 "the default study; none otherwise)")
  p.add_argument("--only", action="append", help="run only <stage>/<run> matching this glob")
  p.add_argument("--dry_run", action="store_true", help="print the runs and estimates; run none")
  p.add_argument("--measure", action="store_true", help="time each model first (timing.json)")
  p.add_argument("--allow_dirty", action="store_true",
                 help="train on a checkout with uncommitted code changes (trials only)")
  p.add_argument("--no_report", action="store_true", help="train only")
  p.add_argument("--record_corpus", action="store_true",
                 help="write corpus.json for a study registered before registrations recorded "
                 "the corpus (checked against its runs' records), then stop")
  args = p.parse_args(argv)
  folder = pathlib.Path(args.study).absolute() if args.study else DEFAULT
  study = Study(folder, pathlib.Path(args.scratch).absolute() if args.scratch else
                REPO / "workdirs" / studies.load_plan(folder)["NAME"], args.allow_dirty)
  if args.record_corpus:
    print(f"wrote {study.record_corpus()}")
    return
  if args.measure:
    study.measure()
  listed = study.execute(args.only, dry=True)
  if args.only and not listed:
    raise StudyError(f"--only {args.only}: no run matches; runs are <stage>/<run>, e.g. "
                     "'main_6m/*' or 'c1/mamba_paper-6l-*'.")
  total = 0.0
  for row in listed:
    est = row["estimate_s"]
    total += est or 0.0
    t = f"{est:7.0f} s" if est is not None else "      ? s"
    print(f"{t}  {'done ' if row['done'] else '     '}{row['where']:45s} {row['note']}")
  left = sum(r["estimate_s"] or 0 for r in listed if not r["done"])
  unknown = sum(r["estimate_s"] is None for r in listed)
  print(f"estimate: {total / 3600:.2f} h for {len(listed)} runs ({left / 3600:.2f} h left)"
        + (f"; {unknown} without a timing (run with --measure)" if unknown else ""))
  if args.dry_run:
    return
  t0 = time.time()
  study.execute(args.only, dry=False)
  print(f"{study.trained} runs trained in {time.time() - t0:.0f} s", flush=True)
  if args.no_report:
    return
  if args.results_md:
    md = pathlib.Path(args.results_md).absolute()
    studies.write(folder, md)
  elif folder.resolve() in (DEFAULT, *RESULTS_SECTIONS):  # The repository's RESULTS.md, all.
    md = REPO / "RESULTS.md"
    studies.write(DEFAULT, md, sections=tuple(RESULTS_SECTIONS))
  else:
    md = None
    studies.write(folder)
  print(f"wrote {folder}/report.md" + (f" and {md}" if md else ""))


def main(argv=None):
  """The command line; bad input and failed runs are one line on stderr and exit status 2."""
  try:
    _main(sys.argv[1:] if argv is None else argv)
  except (StudyError, studies.StudyError) as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
