"""The study of the paper's claims C1-C5: every run with train.py, then RESULTS.md.

    python benchmarks/study.py                       # the CPU study (~2 h on 2 cores), RESULTS.md
    python benchmarks/study.py --dry_run             # the runs and their estimated times
    python benchmarks/study.py --measure             # time a 30-step run of each model first
    python benchmarks/study.py --only 'table3/*'     # a subset (globs over <study>/<run>)
    python benchmarks/study.py --corpus PATH         # a text8-form file instead of pydoc
    python benchmarks/study.py --scale paper ...     # text8, configs/text8.py (a GPU; see below)

Studies (folders under --workdirs, one run folder each: <study>/<variant>[-lr<x>][-n1]-s<seed>):
  table2        inn, inn_paper, mamba, lstm, transformer at equal tokens, seeds 0 and 1
  table2_flops  the same at equal training FLOPs (the INN's budget: cheaper models see more
                tokens, the paper form fewer), seed 0
  table3        inn, no_comm, static_comm at equal tokens, seeds 0 and 1
  c1_lr         mamba and inn at peak rates 4e-4, 2e-3, 1e-2, 3e-2, seed 0
  forms         inn with neuron_params full (the default), ssm, shared, seeds 0 and 1
  c5            inn_paper at its N neurons and at N=1, seeds 0 and 1
  C4            python -m inn_jax.analyze on table2's inn and inn_paper (<run>/analysis/)
A run shared by several studies (e.g. table2's inn-s0 is also table3's, c1_lr's at 2e-3 and
table2_flops' budget) is trained once and its files copied into each.

Each run is `python train.py --config <config>:<variant> ...` in its own scratch workdir under
--scratch (checkpoints, TensorBoard; not committed), resumed from its checkpoints if
interrupted. When it ends, its small files (results.json, metrics.jsonl, config.json,
vocab.json, summary.json if any) are copied to --workdirs/<study>/<run>/ (committed). A run that
stops on a non-finite loss is a result: diverged.json there instead of results.json. A run whose
results.json or diverged.json is in --workdirs is not run again, so a second invocation with
everything done only writes the report: `python -m inn_jax.report` over --workdirs, PNGs and
report.md in --out, and --results_md (RESULTS.md at the repository root).

Time: --measure trains each distinct model 30 steps and writes --out/timing.json (seconds per
step and the fixed cost: start-up, compilation, evaluation); the plan (--out/plan.json, and
--dry_run) estimates each run as fixed cost + steps x seconds per step.

Scales: `cpu` (configs/study.py, about 100k parameters, STEPS steps of 16 x 128), `tiny` (a few
steps of tiny models, one seed: the smoke test), `paper` (configs/text8.py: the paper's sizes,
20,000 steps of 32 x 256 on text8, bfloat16; the forms rows as overrides of text8.py:inn).
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # Run from a clone: the inn_jax beside this script.

LRS = (4e-4, 2e-3, 1e-2, 3e-2)
SEEDS = (0, 1)
TABLE2 = ("inn", "inn_paper", "mamba", "lstm", "transformer")
ANALYZE = ("inn", "inn_paper")  # C4: table2's runs of these variants.
KEEP = ("results.json", "diverged.json", "metrics.jsonl", "config.json", "vocab.json",
        "summary.json")
MEASURE_STEPS = 30
# The CPU study's length: equal-token runs of STEPS x 16 x 128 = 2,048,000 tokens (the issue's
# ~2M), which benchmarks/results/study/timing.json (measured on the 2 cores, idle) puts at an
# estimated 1.73 h for the whole study (`--dry_run` prints it).
STEPS = 1000
DIVERGED = "stopped without applying that update"  # inn_jax.train.loop.check_finite's words.
# Tiny models for --scale tiny, per model kind (keys a kind lacks are not passed).
TINY = {"inn": dict(d_model=16, n_layers=1, n_neurons=2, n_heads=2, d_state=4, scan_chunk=8),
        "mamba": dict(d_model=16, n_layers=1, d_state=4, scan_chunk=8),
        "lstm": dict(hidden=16, n_layers=1),
        "transformer": dict(d_model=16, n_layers=1, n_heads=2, d_ff=32)}
KINDS = {"inn": "inn", "inn_paper": "inn", "no_comm": "inn", "static_comm": "inn",
         "inn_ssm": "inn", "inn_shared": "inn", "mamba": "mamba", "lstm": "lstm",
         "transformer": "transformer"}
# configs/study.py's forms; at the paper's scale (N=32) as overrides of text8.py:inn, expand
# matching the default form's 4,226,075 parameters (ssm 4,227,695; shared 4,226,075).
PAPER_FORMS = {"inn_ssm": {"model.neuron_params": "ssm", "model.expand": 1.2109375},
               "inn_shared": {"model.neuron_params": "shared", "model.expand": 2.0}}


class StudyError(ValueError):
  """Bad input or a failed run: one line, exit status 2."""


@dataclasses.dataclass
class Job:
  """One train.py run, and the study folders it fills."""
  variant: str  # configs/<config>.py's variant.
  seed: int
  steps: int
  overrides: dict  # --config.<key>=<value>, beyond the seed, steps and the scale's own.
  data: dict = dataclasses.field(default_factory=dict)  # --corpus: not part of the key.
  places: list = dataclasses.field(default_factory=list)  # [(study, run name)].
  analyze: bool = False
  estimate_s: float | None = None

  @property
  def key(self) -> str:
    """The scratch workdir's name: one per distinct computation."""
    extra = "".join(f"-{k.rpartition('.')[2]}{v}" for k, v in sorted(self.overrides.items()))
    return f"{self.variant}{extra}-s{self.seed}-{self.steps}"


@dataclasses.dataclass
class Scale:
  name: str
  config: str
  seeds: tuple
  steps: int | None  # None: the config's own.
  common: dict  # Overrides of every run of this scale.
  tiny: bool = False
  measure_steps: int = MEASURE_STEPS


SCALES = {
    "cpu": Scale("cpu", "configs/study.py", SEEDS, STEPS,
                 {"log.progress": False, "log.tensorboard": False}),
    "tiny": Scale("tiny", "configs/study.py", (0,), 3,
                  {"log.progress": False, "log.tensorboard": False, "data.batch_size": 4,
                   "data.seq_len": 16, "data.eval_batch_size": 8, "train.eval_windows": 1,
                   "train.log_every": 1}, tiny=True, measure_steps=3),
    "paper": Scale("paper", "configs/text8.py", SEEDS, None,
                   {"log.progress": False, "log.tensorboard": False}),
}


def _config(scale: Scale, variant: str, overrides: dict):
  """The config train.py builds for this run (to read its defaults and count its FLOPs)."""
  from inn_jax.train import config as config_lib
  spec, extra = _spec(scale, variant)
  options = {**scale.common, **extra, **_tiny(scale, variant), **overrides}
  args = ["--config", str(REPO / spec)] + [f"--config.{k}={v}" for k, v in options.items()]
  return config_lib.from_argv(args)


def _spec(scale: Scale, variant: str) -> tuple[str, dict]:
  if scale.name == "paper" and variant in PAPER_FORMS:
    return f"{scale.config}:inn", PAPER_FORMS[variant]
  return f"{scale.config}:{variant}", {}


def _tiny(scale: Scale, variant: str) -> dict:
  if not scale.tiny:
    return {}
  return {f"model.{k}": v for k, v in TINY[KINDS[variant]].items()}


def _fpt(scale: Scale, variant: str, overrides: dict) -> float:
  """Training FLOPs per token of this run's model (27 symbols: text8 form), as the report
  computes it (3 x the forward's matmuls: for every model of the study exactly the train-step
  count results.json reports, inn_jax.train.model_summary, at a tenth of the tracing time)."""
  from inn_jax import report
  from inn_jax.train import workdir as workdir_lib
  return report.flops_per_token(workdir_lib.as_json(_config(scale, variant, overrides)), 27)


def plan(scale: Scale, corpus: str | None) -> list[Job]:
  """Every run of the study, each once, with the study folders it fills."""
  data = ({"data.name": "text_file", "data.path": corpus, "data.normalize": "text8"}
          if corpus else {})
  base = _config(scale, "inn", data)
  steps = scale.steps or base.train.steps
  batch_tokens = base.data.batch_size * base.data.seq_len
  jobs: dict[str, Job] = {}

  def add(study, name, variant, seed, n_steps=steps, analyze=False, **overrides):
    overrides = {k.replace("__", "."): v for k, v in overrides.items()}
    job = Job(variant, seed, n_steps, overrides, data)
    job = jobs.setdefault(job.key, job)
    job.places.append((study, name))
    job.analyze |= analyze

  for seed in scale.seeds:
    for v in TABLE2:
      add("table2", f"{v}-s{seed}", v, seed, analyze=v in ANALYZE)
    for v in ("inn", "no_comm", "static_comm"):
      add("table3", f"{v}-s{seed}", v, seed)
    for v in ("inn", "inn_ssm", "inn_shared"):
      add("forms", f"{v}-s{seed}", v, seed)
    add("c5", f"inn_paper-s{seed}", "inn_paper", seed)
    add("c5", f"inn_paper-n1-s{seed}", "inn_paper", seed, model__n_neurons=1)
  budget = _fpt(scale, "inn", data) * steps * batch_tokens  # The INN's FLOPs at equal tokens.
  for v in TABLE2:
    n = max(1, round(budget / _fpt(scale, v, data) / batch_tokens))
    add("table2_flops", f"{v}-s0", v, scale.seeds[0], n_steps=n)
  for v in ("mamba", "inn"):
    for lr in LRS:
      lr_base = _config(scale, v, data).optim.lr
      add("c1_lr", f"{v}-lr{lr:g}-s0", v, scale.seeds[0],
          **({} if lr == lr_base else {"optim__lr": lr}))
  return list(jobs.values())


def command(scale: Scale, job: Job, workdir) -> list[str]:
  spec, extra = _spec(scale, job.variant)
  n = job.steps
  # Runs the study sizes validate 8 times and save 4 times; the paper's keep their config's.
  cadence = ({} if scale.name == "paper" else
             {"train.eval_every": max(1, n // 8), "train.save_every": max(1, n // 4)})
  opts = {**scale.common, **extra, **_tiny(scale, job.variant), "seed": job.seed,
          "train.steps": n, **cadence, **job.data, **job.overrides}
  return [sys.executable, str(REPO / "train.py"), "--config", spec, "--workdir", str(workdir),
          *(f"--config.{k}={v}" for k, v in opts.items())]


def _timing_key(scale: Scale, job: Job) -> str:
  """Jobs of one model share a timing: the same config but for seed, steps and rate."""
  over = {k: v for k, v in job.overrides.items() if k != "optim.lr"}
  return json.dumps([scale.name, job.variant, over], sort_keys=True)


def measure(scale: Scale, jobs: list[Job], scratch: pathlib.Path, out: pathlib.Path) -> dict:
  """Trains each distinct model measure_steps steps: seconds per step and the fixed cost."""
  timing = {}
  for job in jobs:
    key = _timing_key(scale, job)
    if key in timing:
      continue
    probe = Job(job.variant, 0, scale.measure_steps, job.overrides, job.data)
    work = scratch / "_timing" / probe.key
    shutil.rmtree(work, ignore_errors=True)
    print(f"measuring {probe.key} ({scale.measure_steps} steps)", flush=True)
    proc = subprocess.run(command(scale, probe, work), cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
      raise StudyError(f"measuring {probe.key} failed: {_tail(proc.stderr or proc.stdout)}")
    r = json.loads((work / "results.json").read_text())
    timing[key] = {"variant": job.variant, "params": r["params"],
                   "step_s": r["train_time_s"] / r["steps"],
                   "fixed_s": r["wall_time_s"] - r["train_time_s"],
                   "tokens_per_s": r["tokens_per_s"], "device_kind": r["device_kind"]}
    shutil.rmtree(work, ignore_errors=True)
  (out / "timing.json").write_text(json.dumps(timing, indent=1) + "\n")
  return timing


def estimate(scale: Scale, jobs: list[Job], timing: dict) -> dict:
  """Each job's estimated seconds; the total (each run once) and per study."""
  for job in jobs:
    t = timing.get(_timing_key(scale, job))
    job.estimate_s = t and t["fixed_s"] + job.steps * t["step_s"]
  known = [j for j in jobs if j.estimate_s is not None]
  by_study = {}
  for job in known:
    for study in dict.fromkeys(s for s, _ in job.places):
      by_study[study] = by_study.get(study, 0.0) + job.estimate_s
  return {"scale": scale.name, "runs": len(jobs), "runs_estimated": len(known),
          "estimate_s": sum(j.estimate_s for j in known), "by_study_s": by_study,
          "jobs": [{"key": j.key, "places": ["/".join(p) for p in j.places], "steps": j.steps,
                    "estimate_s": j.estimate_s} for j in jobs]}


def _tail(text: str) -> str:
  """The error line of a finished train.py's output (else its last lines)."""
  lines = (text or "").strip().splitlines()
  errors = [l for l in lines if l.startswith("error:")]
  return (errors[-1] if errors else " ".join(lines[-3:]))[-800:]


def _done(folder: pathlib.Path) -> bool:
  return (folder / "results.json").is_file() or (folder / "diverged.json").is_file()


def run_job(scale: Scale, job: Job, workdirs: pathlib.Path, scratch: pathlib.Path) -> bool:
  """Trains (or resumes) one job unless done; copies its files; returns whether it trained."""
  folders = [workdirs / study / name for study, name in job.places]
  work = scratch / job.key
  trained = False
  if not all(_done(f) for f in folders) and not _done(work):
    cmd = command(scale, job, work)
    print(f"run {job.key} -> {', '.join('/'.join(p) for p in job.places)}"
          + (f" (estimated {job.estimate_s:.0f} s)" if job.estimate_s else ""), flush=True)
    print("  " + shlex.join(cmd), flush=True)
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
      _, err = proc.communicate()
    except KeyboardInterrupt:  # train.py saves on SIGINT, then exits: let it.
      proc.communicate()
      raise StudyError(f"interrupted during {job.key}; run the study again to resume it.")
    trained = True
    if proc.returncode == 2 and DIVERGED in err:
      line = _tail(err)
      step = re.search(r"at step (\d+)", line)
      (work / "diverged.json").write_text(json.dumps(
          {"diverged": True, "step": int(step.group(1)) if step else None, "message": line,
           "command": shlex.join(cmd)}, indent=1) + "\n")
      print(f"  diverged: {line}", flush=True)
    elif proc.returncode or not (work / "results.json").is_file():
      raise StudyError(f"{job.key}: train.py exited {proc.returncode}: {_tail(err)} (run the "
                       "study again to resume it)")
  for folder in folders:
    if not _done(folder):
      folder.mkdir(parents=True, exist_ok=True)
      for name in KEEP:
        if (work / name).is_file():
          shutil.copy2(work / name, folder / name)
  if job.analyze:
    for folder in folders:
      if folder.parent.name == "table2" and not (folder / "analysis" / "report.json").is_file():
        if not (work / "checkpoints").is_dir():
          print(f"  no checkpoints in {work}: cannot analyse {folder}", flush=True)
          continue
        cmd = [sys.executable, "-m", "inn_jax.analyze", "--workdir", str(work), "--split",
               "valid", "--out", str(folder / "analysis")]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if proc.returncode:
          raise StudyError(f"analysis of {job.key} failed: {_tail(proc.stderr or proc.stdout)}")
  return trained


def paper_commands() -> str:
  """The paper-scale study as commands for a GPU, and the train.py runs it makes."""
  scale = SCALES["paper"]
  jobs = plan(scale, None)
  lines = ["On one GPU (the README's set-up, then `pip install \"jax[cuda12]\"`; text8 is "
           "downloaded on first use), the same study at the paper's sizes and protocol "
           "(configs/text8.py: 20,000 steps of 32 x 256, bfloat16), read by the same report:",
           "", "    python benchmarks/study.py --scale paper --workdirs results/paper/runs \\",
           "        --scratch workdirs/paper --out results/paper --results_md RESULTS_paper.md",
           "", f"It makes these {len(jobs)} train.py runs (each resumes if interrupted), then "
           "the C4 analyses (`python -m inn_jax.analyze`) and the report:", ""]
  for job in jobs:
    cmd = command(scale, job, pathlib.Path("workdirs/paper") / job.key)
    cmd[:2] = ["python", "train.py"]
    lines.append("    " + shlex.join(cmd))
  return "\n".join(lines) + "\n"


def _main(argv):
  p = argparse.ArgumentParser(prog="benchmarks/study.py", description=__doc__.split("\n")[0])
  p.add_argument("--scale", choices=sorted(SCALES), default="cpu")
  p.add_argument("--corpus", help="a text8-form file (data.name=text_file) instead of pydoc")
  p.add_argument("--workdirs", help="the committed run folders, <study>/<run>/ (default "
                 "benchmarks/results/study/runs in the repository)")
  p.add_argument("--scratch", help="train.py's workdirs, checkpoints (default workdirs/study)")
  p.add_argument("--out", help="PNGs, report, plan.json, timing.json (default "
                 "benchmarks/results/study)")
  p.add_argument("--results_md", help="the claims' verdicts (default RESULTS.md in the "
                 "repository)")
  p.add_argument("--steps", type=int, help=f"steps of an equal-token run (cpu: {STEPS})")
  p.add_argument("--only", action="append", help="run only <study>/<run> matching this glob")
  p.add_argument("--dry_run", action="store_true", help="print the runs and estimates; run none")
  p.add_argument("--measure", action="store_true", help="time each model first (timing.json)")
  args = p.parse_args(argv)
  if args.corpus and not pathlib.Path(args.corpus).is_file():
    raise StudyError(f"--corpus {args.corpus}: no such file; give a text8-form text file.")
  scale = SCALES[args.scale]
  if args.steps is not None:
    if args.steps < 1:
      raise StudyError(f"--steps {args.steps}: must be >= 1 (the steps of an equal-token run).")
    scale = dataclasses.replace(scale, steps=args.steps)
  # Given paths are the caller's (from the current directory); defaults are the repository's.
  here = lambda given, default: pathlib.Path(given).absolute() if given else REPO / default
  workdirs = here(args.workdirs, "benchmarks/results/study/runs")
  scratch = here(args.scratch, "workdirs/study")
  out = here(args.out, "benchmarks/results/study")
  md = here(args.results_md, "RESULTS.md")
  out.mkdir(parents=True, exist_ok=True)
  jobs = plan(scale, str(pathlib.Path(args.corpus).absolute()) if args.corpus else None)
  if args.only:
    jobs = [j for j in jobs if any(fnmatch.fnmatch("/".join(pl), g) for pl in j.places
                                   for g in args.only)]
    if not jobs:
      raise StudyError(f"--only {args.only}: no run matches; runs are <study>/<run>, e.g. "
                       "'table2/*' or 'c1_lr/mamba-*'.")
  timing_file = out / "timing.json"
  timing = (measure(scale, jobs, scratch, out) if args.measure else
            json.loads(timing_file.read_text()) if timing_file.is_file() else {})
  est = estimate(scale, jobs, timing)
  for job in jobs:
    done = all(_done(workdirs / s / n) for s, n in job.places)
    t = f"{job.estimate_s:7.0f} s" if job.estimate_s is not None else "      ? s"
    where = ", ".join("/".join(p) for p in job.places)
    print(f"{t}  {'done ' if done else ''}{job.key:40s} {where}")
  print(f"estimate: {est['estimate_s'] / 3600:.2f} h for {est['runs_estimated']} of "
        f"{est['runs']} runs (each once); by study (shared runs in each): " + ", ".join(
            f"{s} {v / 60:.0f} min" for s, v in est["by_study_s"].items())
        + ("" if timing else f" (no {timing_file}: run with --measure)"))
  if args.dry_run:
    return
  if not args.only:
    (out / "plan.json").write_text(json.dumps(est, indent=1) + "\n")
  t0, trained = time.time(), 0
  for job in jobs:
    trained += run_job(scale, job, workdirs, scratch)
  print(f"{trained} runs trained in {time.time() - t0:.0f} s", flush=True)
  if scale.name != "paper":
    (out / "paper_commands.md").write_text(paper_commands())
  from inn_jax import report
  plan_file, cmds = out / "plan.json", out / "paper_commands.md"
  report.write([workdirs], out, md, plan_file if plan_file.is_file() else None,
               cmds if cmds.is_file() else None)
  print(f"wrote {md} and {out}/report.md")


def main(argv=None):
  """The command line; bad input and failed runs are one line on stderr and exit status 2."""
  from inn_jax.report import ReportError
  try:
    _main(sys.argv[1:] if argv is None else argv)
  except (StudyError, ReportError) as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
