"""benchmarks/study.py: the plan holds every row of the study, each run trained once, equal
FLOPs where stated, commands train.py accepts; the paper-scale forms match the INN's parameters;
a tiny study end to end, whose second invocation trains nothing."""

import importlib.util
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from inn_jax import claims, report
from inn_jax.models import build_model
from inn_jax.train import config as config_lib
from inn_jax.train import model_summary, testing
from tests import train_cli

REPO = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("benchmarks_study",
                                               REPO / "benchmarks" / "study.py")
study = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = study  # dataclasses look their module up.
_spec.loader.exec_module(study)


@pytest.fixture(scope="module")
def cpu_plan():
  return study.plan(study.SCALES["cpu"], None)


def _places(jobs) -> dict:
  return {"/".join(p): job for job in jobs for p in job.places}


def test_plan_has_every_row_once(cpu_plan):
  places = _places(cpu_plan)
  want = {f"table2/{v}-s{s}" for v in study.TABLE2 for s in (0, 1)}
  want |= {f"table2_flops/{v}-s0" for v in study.TABLE2}
  want |= {f"table3/{v}-s{s}" for v in ("inn", "no_comm", "static_comm") for s in (0, 1)}
  want |= {f"c1_lr/{v}-lr{lr:g}-s0" for v in ("mamba", "inn") for lr in study.LRS}
  want |= {f"forms/{v}-s{s}" for v in ("inn", "inn_ssm", "inn_shared") for s in (0, 1)}
  want |= {f"c5/inn_paper{n}-s{s}" for n in ("", "-n1") for s in (0, 1)}
  assert set(places) == want
  assert len({j.key for j in cpu_plan}) == len(cpu_plan)
  shared = places["table2/inn-s0"]  # One computation, trained once, in five studies.
  assert all(places[p] is shared for p in ("table3/inn-s0", "forms/inn-s0",
                                           "table2_flops/inn-s0", "c1_lr/inn-lr0.002-s0"))
  assert places["c5/inn_paper-s1"] is places["table2/inn_paper-s1"]
  assert [j.analyze for j in (places["table2/inn-s1"], places["table2/inn_paper-s0"],
                              places["table2/lstm-s0"])] == [True, True, False]


def test_commands_are_what_train_py_runs(cpu_plan, tmp_path):
  scale = study.SCALES["cpu"]
  for where, job in _places(cpu_plan).items():
    cmd = study.command(scale, job, tmp_path / job.key)
    assert cmd[1].endswith("train.py"), cmd
    c = config_lib.from_argv(cmd[2:])
    name, run = where.split("/")
    variant = run.split("-")[0]
    assert c.name == f"study:{variant}" and c.workdir == str(tmp_path / job.key)
    assert c.seed == int(run.rpartition("-s")[2]) and c.train.steps == job.steps
    assert (c.log.progress, c.train.save_every > 0) == (False, True)
    if name == "c1_lr":
      assert f"-lr{c.optim.lr:g}-" in run
    if run.startswith("inn_paper-n1"):
      assert c.model.n_neurons == 1
    elif name in ("table2", "table3", "forms", "c5"):
      assert c.train.steps == study.STEPS and c.optim.lr == 2e-3


def test_equal_flops_rows_spend_the_inns_budget(cpu_plan):
  places, scale = _places(cpu_plan), study.SCALES["cpu"]
  tokens = scale.steps * 16 * 128

  def fpt(job):
    return study._fpt(scale, job.variant, {})

  budget = fpt(places["table2/inn-s0"]) * tokens
  for v in study.TABLE2:
    job = places[f"table2_flops/{v}-s0"]
    spent = fpt(job) * job.steps * 16 * 128
    assert abs(spent - budget) <= 0.5 * fpt(job) * 16 * 128, v  # Within half a step.
  # The plan's count is the trainer's, the one results.json reports (spot check: one model).
  mamba = study._config(scale, "mamba", {})
  assert fpt(places["table2/mamba-s0"]) == model_summary.summarize(mamba, 27)[
      "flops_per_token"]["train"]
  steps = {v: places[f"table2_flops/{v}-s0"].steps for v in study.TABLE2}
  assert steps["inn_paper"] < steps["inn"] < min(steps["mamba"], steps["lstm"],
                                                 steps["transformer"])


def _params(spec, **model):
  c = config_lib.load(spec)
  c.model.update(model)
  abstract = nnx.eval_shape(lambda: build_model(c.model, 27, nnx.Rngs(0, dropout=1)))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


def test_paper_scale_forms_have_the_inns_parameters():
  want = _params("configs/text8.py:inn")
  for variant, overrides in study.PAPER_FORMS.items():
    got = _params("configs/text8.py:inn", **{k.split(".")[1]: v for k, v in overrides.items()})
    assert abs(got - want) / want < 0.001, (variant, got, want)


def test_no_matching_run_is_one_line_and_exit_2(capsys, tmp_path):
  err = train_cli.exits_with_one_line(study.main, ["--dry_run", "--only", "nothing/*", "--out",
                                                   str(tmp_path)], capsys)
  assert "--only" in err and "no run matches" in err


def _driver(root, *extra):
  corpus = root / "tiny.txt"
  if not corpus.exists():
    testing.write_corpus(corpus)
  cmd = [sys.executable, str(REPO / "benchmarks" / "study.py"), "--scale", "tiny", "--corpus",
         str(corpus), "--workdirs", str(root / "runs"), "--scratch", str(root / "scratch"),
         "--out", str(root / "out"), "--results_md", str(root / "RESULTS.md"),
         "--only", "c5/*", "--only", "table2/inn-s0", *extra]
  env = train_cli.env(1)
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


@pytest.mark.slow
def test_tiny_study_end_to_end_then_only_the_report(tmp_path):
  out = _driver(tmp_path)
  assert "3 runs trained" in out, out
  runs = tmp_path / "runs"
  folders = [runs / "c5" / "inn_paper-s0", runs / "c5" / "inn_paper-n1-s0",
             runs / "table2" / "inn-s0", runs / "table2" / "inn_paper-s0"]
  for folder in folders:
    names = {p.name for p in folder.iterdir()}
    assert {"results.json", "metrics.jsonl", "config.json"} <= names, folder
    assert not names & {"checkpoints", "best", "tb"}, folder  # Those stay in the scratch dir.
  assert (folders[2] / "analysis" / "report.json").is_file()
  assert (folders[0] / "results.json").read_bytes() == (folders[3] / "results.json").read_bytes()
  text = (tmp_path / "RESULTS.md").read_text()
  assert "## At the paper's scale" in text and "configs/text8.py:inn_paper" in text
  verdicts = {k: v["verdict"] for k, v in claims.judge(report.build([runs])).items()}
  assert verdicts["C5"] in ("holds", "does not hold") and verdicts["C3"] == claims.CANNOT
  assert verdicts["C4"] in ("holds", "does not hold")
  assert f"| C5 | **{verdicts['C5']}** |" in text
  assert (tmp_path / "out" / "c5_valid_bpc.png").read_bytes().startswith(b"\x89PNG")
  stamps = {f: (f / "results.json").stat().st_mtime_ns for f in folders}
  (tmp_path / "RESULTS.md").unlink()
  again = _driver(tmp_path)
  assert "0 runs trained" in again and "\nrun " not in again, again
  assert again.count(" done ") == 3, again
  assert stamps == {f: (f / "results.json").stat().st_mtime_ns for f in folders}
  assert (tmp_path / "RESULTS.md").read_text() == text
