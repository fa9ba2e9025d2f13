"""Pre-registered studies (inn_jax/studies.py, benchmarks/study.py): the plan's runs and commands,
sweeps that extend at an edge and seed the best rate, a registration that withholds every
verdict once the rules or the plan change, relative paths only, a RESULTS.md that regenerates
from the committed files, and a tiny study end to end (slow)."""

import hashlib
import importlib.util
import json
import pathlib
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from inn_jax import claims, studies
from inn_jax.data import text as text_lib
from inn_jax.models import build_model
from inn_jax.train import config as config_lib
from tests import tiny as testing
from tests import train_cli

REPO = pathlib.Path(__file__).resolve().parents[1]
STUDY = REPO / "benchmarks" / "studies" / "claims-v2"
_spec = importlib.util.spec_from_file_location("benchmarks_study",
                                               REPO / "benchmarks" / "study.py")
driver = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = driver
_spec.loader.exec_module(driver)

TINY_PLAN = '''"""A tiny plan for tests."""
NAME = "tiny"
CONFIG = "configs/study.py"
COMMON = {"data.name": "pydoc", "data.normalize": "text8", "data.batch_size": 4,
          "data.seq_len": 16, "data.eval_batch_size": 256, "data.max_chars": 20000,
          "model.dtype": "float32", "train.microbatches": 1, "train.eval_windows": 1,
          "train.log_every": 1}
SEED_KEYS = ["seed", "data.seed"]
INN = {"model.d_model": 16, "model.n_layers": 1, "model.n_neurons": 2, "model.n_heads": 2,
       "model.d_state": 4}
MODELS = {"inn": {"variant": "inn", "set": INN},
          "lstm": {"variant": "lstm", "set": {"model.hidden": 16, "model.n_layers": 1}},
          "inn_paper": {"variant": "inn_paper", "set": INN},
          "inn_paper-n1": {"variant": "inn_paper", "set": {
              "model.d_model": 16, "model.n_layers": 1, "model.n_neurons": 1,
              "model.n_heads": 2, "model.d_state": 4}}}
STAGES = [
    {"name": "ngram", "kind": "ngram", "orders": [1, 2, 3]},
    {"name": "c5", "kind": "fixed", "models": ["inn_paper", "inn_paper-n1"], "steps": 4,
     "rate": 2e-3, "seeds": [0]},
    {"name": "main", "kind": "sweep", "models": ["inn", "lstm"], "steps": 4,
     "rates": [1e-3, 1e-2], "extend": {"below": 1e-4, "above": 1e-1}, "seeds_at_best": [1]},
    {"name": "c4", "kind": "fixed", "models": ["inn"], "steps": 4,
     "rate_from": {"stage": "main", "model": "inn"}, "seeds": [0], "analyze": True},
]
CADENCE = {"evals": 2, "saves": 2}
RULES = {"select": "valid_bpc", "measure": "test_bpc", "level": 0.95, "min_effect": 0.02,
         "ngram_reference": 3, "ngram_floor": 2, "overfit_rise": 0.01,
         "c1": {"stage": "c1", "mamba": "mamba", "inn": "inn", "fail_above_order": 3},
         "c2": {"stage": "main", "inn": "inn", "lstm": "lstm", "transformer": "lstm",
                "mamba": "lstm", "lstm_margin": 0.03, "transformer_margin": 0.02},
         "c3": {"stage": "main", "inn": "inn", "none": "lstm", "static": "lstm",
                "param_match": 0.03},
         "c4": {"stage": "c4", "inn": "inn", "split": "valid", "max_tokens": 512, "hub": 1.5,
                "specialist": 0.6, "quantile": 0.95, "level": 0.95, "bootstrap": 50,
                "shuffles": 10},
         "c5": {"stage": "c5", "n": "inn_paper", "one": "inn_paper-n1", "equal_within": 0.01,
                "construction": "tests/test_inn.py::test_paper_faithful_population"}}
'''


@pytest.fixture(scope="module")
def plan():
  return studies.load_plan(STUDY)


def _nest(flat: dict) -> dict:
  out = {}
  for key, value in flat.items():
    node = out
    *parents, leaf = key.split(".")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return out


def fake_run(folder, plan, stage, model, lr, seed, steps, valid, test=None):
  """A finished run's files as the driver leaves them (no training)."""
  run = folder / "runs" / stage / studies.run_name(model, lr, seed)
  run.mkdir(parents=True)
  flat = studies.overrides(plan, model, lr, seed, steps)
  flat["name"] = f"study:{plan['MODELS'][model]['variant']}"
  (run / "config.json").write_text(json.dumps(_nest(flat)))
  (run / "provenance.json").write_text(json.dumps(
      {"stage": stage, "model": model, "lr": lr, "seed": seed, "steps": steps, "commit": "c0"}))
  if valid is None:
    (run / "diverged.json").write_text(json.dumps({"diverged": True, "step": 2}))
  else:
    (run / "results.json").write_text(json.dumps(
        {"valid_bpc": valid, "test_bpc": valid if test is None else test, "params": 1000,
         "tokens_seen": steps * 64, "train_time_s": 1.0, "wall_time_s": 2.0,
         "flops_per_token": {"train": 100.0}}))
  (run / "metrics.jsonl").write_text(json.dumps({"step": steps, "split": "valid", "bpc": valid})
                                     + "\n" if valid else "")
  return run


@pytest.fixture
def tiny(tmp_path):
  folder = tmp_path / "study"
  folder.mkdir()
  (folder / "plan.py").write_text(TINY_PLAN)
  return folder, studies.load_plan(folder)


# ------------------------------------------------------------------------------ the plan

def test_plan_is_data_and_its_hash_ignores_comments(tmp_path, plan):
  text = (STUDY / "plan.py").read_text()
  (tmp_path / "plan.py").write_text(text.replace("# The rules", "# Rules, reworded"))
  assert studies.plan_sha256(studies.load_plan(tmp_path)) == studies.plan_sha256(plan)
  (tmp_path / "plan.py").write_text(text.replace('"min_effect": 0.02', '"min_effect": 0.03'))
  assert studies.plan_sha256(studies.load_plan(tmp_path)) != studies.plan_sha256(plan)
  (tmp_path / "plan.py").write_text(text + "\nimport os\n")
  with pytest.raises(studies.StudyError, match="only NAME = literal"):
    studies.load_plan(tmp_path)


def _params(cmd):
  c = config_lib.from_argv(cmd[2:])
  model = nnx.eval_shape(lambda: build_model(c.model, 27, nnx.Rngs(0, dropout=1)))
  return c, sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_every_model_is_a_config_train_py_accepts_treated_alike(plan, tmp_path):
  study = driver.Study(STUDY, tmp_path, allow_dirty=True)
  params = {}
  for model, spec in plan["MODELS"].items():
    cmd = study.command(model, 1e-2, 2, 1000, tmp_path / model)
    c, params[model] = _params(cmd)
    assert (c.seed, c.data.seed, c.optim.lr, c.train.steps) == (2, 2, 1e-2, 1000)
    assert c.data.name == "pydoc" and (c.data.batch_size, c.data.seq_len) == (16, 128)
    assert c.model.get("dropout", 0.0) == 0.0 and c.model.get("attn_dropout", 0.0) == 0.0
    paper = spec["variant"].endswith("_paper")
    assert c.model.tie_embeddings is paper, model  # One head policy but the paper's forms.
  for arch in ("inn", "mamba", "lstm", "transformer"):  # Three sizes per architecture.
    assert 25_000 < params[f"{arch}-30k"] < 32_000
    assert 90_000 < params[arch] < 105_000
    assert 260_000 < params[f"{arch}-300k"] < 320_000
  for ablation in ("no_comm", "static_comm"):  # C3: within 3% of the INN's parameters.
    assert abs(params[ablation] - params["inn"]) <= 0.03 * params["inn"]
  assert params["inn-n16"] == params["inn"]


def test_dry_run_lists_every_run_with_an_estimate_within_six_hours(plan, tmp_path, capsys):
  """Before any run (the plan and its timings in an empty folder): every run, each sweep's
  possible extension counted, within 6 h; the study itself (some runs done) lists no more."""
  fresh = tmp_path / "fresh"
  fresh.mkdir()
  for name in ("plan.py", "timing.json"):
    shutil.copy(STUDY / name, fresh / name)
  study = driver.Study(fresh, tmp_path, allow_dirty=True)
  listed = study.execute(None, dry=True)
  where = [r["where"] for r in listed]
  assert len(where) == len(set(where))
  assert all(r["estimate_s"] is not None for r in listed), "timing.json lacks a model"
  main = [w for w in where if w.startswith("main_6m/")]
  assert len(main) == 4 * (4 + 1 + 2)  # Four rates, a possible extension, two more seeds.
  sweep = [w for w in where if w.startswith("sweep_2m/")]
  assert len(sweep) == 14 * 5 + 6 * 2
  assert len([w for w in where if w.startswith("c1/")]) == 2 * (4 + 2)
  assert sum(r["estimate_s"] for r in listed) <= 6 * 3600
  driver.main(["--dry_run", "--scratch", str(tmp_path)])
  out = capsys.readouterr().out
  found = re.search(r"estimate: ([\d.]+) h for (\d+) runs", out)
  assert float(found.group(1)) <= 6.0 and int(found.group(2)) <= len(listed)


def test_sweeps_extend_at_an_edge_and_seed_the_best_rate(tiny, tmp_path):
  folder, plan = tiny
  study = driver.Study(folder, tmp_path / "scratch", allow_dirty=True)
  stage = plan["STAGES"][2]
  fake_run(folder, plan, "main", "inn", 1e-3, 0, 4, valid=2.5)
  fake_run(folder, plan, "main", "inn", 1e-2, 0, 4, valid=2.4)  # Best at the top: extend.
  fake_run(folder, plan, "main", "lstm", 1e-3, 0, 4, valid=None)  # Diverged: +inf.
  fake_run(folder, plan, "main", "lstm", 1e-2, 0, 4, valid=2.6)
  assert study.extension("main", "inn", stage) == 1e-1
  assert study.best("main", "inn", stage) is None  # Not until the extension ran.
  fake_run(folder, plan, "main", "inn", 1e-1, 0, 4, valid=2.45)
  assert study.best("main", "inn", stage) == 1e-2
  runs = []
  with pytest.raises(driver.StudyError, match="main/lstm: its sweep has not finished"):
    for m, lr, seed, _, _ in study.stage_runs(stage, dry=False):
      runs.append((m, lr, seed))
  # The LSTM's best (1e-2; 1e-3 diverged) is at the top end too: its extension comes first.
  assert runs == [("inn", 1e-3, 0), ("inn", 1e-2, 0), ("inn", 1e-1, 0), ("lstm", 1e-3, 0),
                  ("lstm", 1e-2, 0), ("lstm", 1e-1, 0), ("inn", 1e-2, 1)]


def test_a_sweep_in_model_order_seeds_each_model_before_the_next(tiny, tmp_path):
  """With "order": "model" each model's sweep, extension and seeds run before the next model's
  sweep (a costly model placed last holds up no other's results); a bad order is a named error."""
  folder, plan = tiny
  study = driver.Study(folder, tmp_path / "scratch", allow_dirty=True)
  stage = dict(plan["STAGES"][2], order="model")
  fake_run(folder, plan, "main", "inn", 1e-3, 0, 4, valid=2.4)  # Best at the bottom: extend.
  fake_run(folder, plan, "main", "inn", 1e-2, 0, 4, valid=2.5)
  fake_run(folder, plan, "main", "inn", 1e-4, 0, 4, valid=2.6)
  runs = []
  with pytest.raises(driver.StudyError, match="main/lstm: its sweep has not finished"):
    for m, lr, seed, _, _ in study.stage_runs(stage, dry=False):
      runs.append((m, lr, seed))
  assert runs == [("inn", 1e-3, 0), ("inn", 1e-2, 0), ("inn", 1e-4, 0), ("inn", 1e-3, 1),
                  ("lstm", 1e-3, 0), ("lstm", 1e-2, 0)]
  with pytest.raises(driver.StudyError, match="main: order='by_model'; use 'stage'"):
    list(study.stage_runs(dict(stage, order="by_model"), dry=True))


def test_a_run_that_is_not_what_the_plan_says_is_an_error(tiny):
  folder, plan = tiny
  run = fake_run(folder, plan, "main", "inn", 1e-3, 0, 4, valid=2.5)
  assert len(studies.records(folder, plan)) == 1
  config = json.loads((run / "config.json").read_text())
  config["model"]["d_model"] = 32
  (run / "config.json").write_text(json.dumps(config))
  with pytest.raises(studies.StudyError, match="model.d_model: plan 16, run 32"):
    studies.records(folder, plan)


# ------------------------------------------------------------------------ registration

def _verdicts(folder) -> dict:
  return {k: v["verdict"] for k, v in studies.build(folder)["verdicts"].items()}


def test_editing_the_rules_after_the_first_run_withholds_every_verdict(tiny, tmp_path):
  """The rules' code copied, registered, then edited (a threshold in claims.py): the report run
  with the edited copy withholds every verdict; with the registered code it gives them."""
  folder, plan = tiny
  for seed, (a, b) in enumerate([(2.0, 2.1), (2.01, 2.12), (1.99, 2.09)]):
    fake_run(folder, plan, "main", "inn", 1e-3, seed, 4, valid=a)
    fake_run(folder, plan, "main", "lstm", 1e-3, seed, 4, valid=b)
  studies.register(folder, plan, "c0")
  pkg = tmp_path / "pkg"
  shutil.copytree(REPO / "inn_jax", pkg / "inn_jax", ignore=shutil.ignore_patterns("__pycache__"))

  def report():
    proc = subprocess.run([sys.executable, "-m", "inn_jax.studies", str(folder)], cwd=pkg,
                          capture_output=True, text=True, env=train_cli.env(1))
    assert proc.returncode == 0, proc.stderr
    return (folder / "report.md").read_text()

  text = report()
  assert "withheld" not in text and "| C2 | **holds** |" in text  # LSTM as Transformer: 0.1 up.
  rules = pkg / "inn_jax" / "claims.py"
  rules.write_text(rules.read_text().replace('r["lstm_margin"]', '2 * r["lstm_margin"]'))
  text = report()
  for claim in claims.CLAIMS:
    assert f"| {claim} | **{studies.WITHHELD}" in text, claim
  assert "inn_jax/claims.py's hash is" in text and "**Verdicts withheld**" in text


def test_editing_the_plan_withholds_every_verdict(tiny):
  folder, plan = tiny
  studies.register(folder, plan, "c0")
  assert all(not v.startswith("withheld") for v in _verdicts(folder).values())
  text = (folder / "plan.py").read_text()
  (folder / "plan.py").write_text(text.replace('"min_effect": 0.02', '"min_effect": 0.05'))
  assert all(v.startswith(studies.WITHHELD) for v in _verdicts(folder).values())
  reg = json.loads((folder / "registration.json").read_text())
  assert reg["plan_sha256"] == studies.plan_sha256(plan)


def test_the_driver_refuses_to_train_a_changed_study(tiny, tmp_path, capsys):
  folder, plan = tiny
  studies.register(folder, plan, "c0")
  text = (folder / "plan.py").read_text()
  (folder / "plan.py").write_text(text.replace('"steps": 4,\n     "rate": 2e-3',
                                               '"steps": 5,\n     "rate": 2e-3'))
  err = train_cli.exits_with_one_line(driver.main, [
      "--study", str(folder), "--scratch", str(tmp_path / "s"), "--allow_dirty", "--only",
      "c5/*"], capsys)
  assert "since the study's first run" in err and "new study" in err


# ------------------------------------------------------------------------------ the corpus

def test_the_registration_records_the_corpus_and_the_driver_refuses_another(tmp_path, capsys):
  """A study on a made-up text file: the first run registers the corpus (name, the text's
  sha256 and length, its ids); the same-length file with another text is refused before any
  training, in one line naming the study, both corpora and the fix; the registered text again
  is accepted."""
  folder, text = tmp_path / "study", tmp_path / "made_up.txt"
  folder.mkdir()
  testing.write_corpus(text, seed=0)
  (folder / "plan.py").write_text(TINY_PLAN.replace(
      '"data.name": "pydoc", "data.normalize": "text8"',
      f'"data.name": "text_file", "data.path": {str(text)!r}'))
  study = driver.Study(folder, tmp_path / "scratch", allow_dirty=True)
  study._start()
  registered = studies.registration(folder)["corpus"]
  sha = hashlib.sha256(text.read_bytes()).hexdigest()
  assert registered == study.corpus() and registered["name"] == "text_file"
  assert (registered["sha256"], registered["chars"], registered["files"]) == \
      (sha, 6000, {"made_up.txt": sha})
  testing.write_corpus(text, seed=1)  # The same length and symbols, another text.
  other = hashlib.sha256(text.read_bytes()).hexdigest()
  err = train_cli.exits_with_one_line(driver.main, [
      "--study", str(folder), "--scratch", str(tmp_path / "scratch"), "--allow_dirty",
      "--only", "c5/*"], capsys)
  assert err.startswith(f"error: tiny: the corpus here is text_file (sha256 {other[:12]}..., "
                        "6,000 characters")
  assert f"but the study registered text_file (sha256 {sha[:12]}..., 6,000 characters" in err
  assert "(differs: sha256, files, tokens" in err and "restore the registered data" in err
  assert "a different corpus is a new study" in err
  assert not (tmp_path / "scratch").exists() and not (folder / "runs").exists()  # No training.
  testing.write_corpus(text, seed=0)
  driver.Study(folder, tmp_path / "scratch", allow_dirty=True).check_corpus()


def _recorded(run, tokens_sha256):
  """The run's config.json as train.py writes it: with the sha256 of the ids it read."""
  config = json.loads((run / "config.json").read_text())
  config["resolved"] = {"corpus_sha256": tokens_sha256}
  (run / "config.json").write_text(json.dumps(config))


def test_a_study_registered_before_corpus_records_needs_corpus_json(tiny, tmp_path, capsys):
  """Registered without a corpus: the driver refuses to train until corpus.json says what the
  runs trained on; --record_corpus writes it only when the runs recorded this corpus's ids; a
  run of another corpus withholds the verdicts."""
  folder, plan = tiny
  studies.register(folder, plan, "c0")  # As before registrations held the corpus.
  registration = (folder / "registration.json").read_bytes()
  study = driver.Study(folder, tmp_path / "scratch", allow_dirty=True)
  with pytest.raises(driver.StudyError, match="registered without a record of its corpus .* "
                                              "--record_corpus"):
    study.check_corpus()
  run = fake_run(folder, plan, "main", "inn", 1e-3, 0, 4, valid=2.5)
  _recorded(run, "0" * 64)
  err = train_cli.exits_with_one_line(driver.main, [
      "--study", str(folder), "--scratch", str(tmp_path / "s"), "--record_corpus"], capsys)
  assert "1 of its runs (main/inn-lr0.001-s0) recorded another corpus" in err
  assert not (folder / studies.CORPUS_FILE).exists()
  current = study.corpus()
  _recorded(run, current["tokens_sha256"])
  driver.main(["--study", str(folder), "--scratch", str(tmp_path / "s"), "--record_corpus"])
  written = json.loads((folder / studies.CORPUS_FILE).read_text())
  assert written == {"study": "tiny", **current, "python": "CPython 3.12.1",
                     "source": text_lib.pydoc_source(), "evidence": written["evidence"]}
  assert (written["sha256"], written["chars"]) == (text_lib.PYDOC_SHA256, text_lib.PYDOC_CHARS)
  assert (folder / "registration.json").read_bytes() == registration  # Left as it was.
  study.check_corpus()
  assert studies.changed(folder, plan, studies.records(folder, plan)) == []
  other = fake_run(folder, plan, "main", "lstm", 1e-3, 0, 4, valid=2.6)
  _recorded(other, "1" * 64)
  assert studies.changed(folder, plan, studies.records(folder, plan)) == [
      f"1 runs trained on another corpus than the registered "
      f"{studies.describe_corpus(written)} (main/lstm-lr0.001-s0)"]
  assert all(v.startswith(studies.WITHHELD) for v in _verdicts(folder).values())


# ------------------------------------------------------------------- the committed study

def test_the_registered_studies_say_what_they_trained_on(tmp_path):
  """claims-v2 and population-v1 were registered before registrations held the corpus: their
  corpus.json says CPython 3.12.1's pydoc text, every run recorded its ids, and the driver
  accepts the shipped corpus as theirs."""
  for folder in (STUDY, *SECTIONS):
    plan = studies.load_plan(folder)
    assert "corpus" not in studies.registration(folder)
    record = json.loads((folder / studies.CORPUS_FILE).read_text())
    assert record["study"] == plan["NAME"] and record["python"] == "CPython 3.12.1"
    assert (record["name"], record["sha256"], record["chars"], record["tokens"]) == \
        ("pydoc", text_lib.PYDOC_SHA256, text_lib.PYDOC_CHARS, 1_728_937)
    assert studies.registered_corpus(folder) == record
    recs = studies.records(folder, plan)
    assert recs and all(r["corpus"] == {"tokens_sha256": record["tokens_sha256"]} for r in recs)
    assert studies.changed(folder, plan, recs) == []
    driver.Study(folder, tmp_path, allow_dirty=True).check_corpus()



ABSOLUTE = re.compile(r"[\"' (](/(work|tmp|root|home|usr|opt|mnt)/)")


def test_no_committed_result_carries_an_absolute_path():
  files = [p for d in ("benchmarks/studies", "benchmarks/results") for p in (REPO / d).rglob("*")
           if p.suffix in (".json", ".jsonl", ".md")] + [REPO / "RESULTS.md"]
  bad = [f"{p.relative_to(REPO)}: {m.group(1)}" for p in files
         for m in [ABSOLUTE.search(p.read_text())] if m]
  assert not bad, bad[:5]


SECTIONS = driver.RESULTS_SECTIONS  # The studies RESULTS.md summarises as sections.


def test_results_md_regenerates_from_the_committed_files():
  """RESULTS.md is what the report makes of the committed runs, byte for byte, with the
  population study as its section "Scaling the population"; so are both studies' reports."""
  text = (REPO / "RESULTS.md").read_text()
  command = text.split("Generated by `", 1)[1].split("`", 1)[0]
  assert command == ("python -m inn_jax.studies benchmarks/studies/claims-v2 --results_md "
                     "RESULTS.md --section benchmarks/studies/population-v1")
  files = studies.markdown_files(STUDY, REPO / "RESULTS.md", sections=SECTIONS)
  assert files[REPO / "RESULTS.md"] == text
  assert "\n## Scaling the population\n" in text
  claims_part = text.split("\n## Scaling the population\n")[0]
  assert "**In progress**" not in claims_part  # claims-v2 has every run of its plan.
  assert files[STUDY / "report.md"] == (STUDY / "report.md").read_text()
  for folder in SECTIONS:
    assert (studies.markdown_files(folder)[folder / "report.md"]
            == (folder / "report.md").read_text())


def test_readme_results_paragraph_is_the_reports_headline():
  """The README's headline block and RESULTS.md's first paragraph agree word for word, both as
  the report writes them from the committed runs."""
  text = (REPO / "RESULTS.md").read_text()
  headline = text.split("## What the data show\n\n", 1)[1].split("\n\n", 1)[0]
  assert headline == studies.headline(studies.build(STUDY))
  readme = (REPO / "README.md").read_text()
  assert studies.readme_with_headline(readme, headline) == readme


@pytest.mark.slow
def test_tiny_study_end_to_end_then_only_the_report(tiny, tmp_path):
  folder, plan = tiny
  cmd = [sys.executable, str(REPO / "benchmarks" / "study.py"), "--study", str(folder),
         "--scratch", str(tmp_path / "scratch"), "--allow_dirty"]
  proc = subprocess.run(cmd, capture_output=True, text=True, env=train_cli.env(1), cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  runs = folder / "runs"
  trained = int(re.search(r"(\d+) runs trained", proc.stdout).group(1))
  folders = list(runs.glob("*/*/provenance.json"))
  assert trained == len(folders) >= 9  # c5 2, the sweeps 4 (+ extensions), 2 seeds, c4 1.
  assert (runs / "ngram" / "ngram.json").is_file()
  c4 = next((runs / "c4").iterdir())
  roles = json.loads((c4 / "analysis" / "report.json").read_text())["roles"]
  assert len(roles["layers"]) == 1 and len(roles["layers"][0]["ratio"]) == 2
  for path in folder.rglob("*.json"):
    assert not ABSOLUTE.search(path.read_text()), path
  corpus = studies.registration(folder)["corpus"]  # Registered; every run recorded the same.
  assert (corpus["name"], corpus["sha256"], corpus["chars"]) == \
      ("pydoc", text_lib.PYDOC_SHA256, text_lib.PYDOC_CHARS)
  assert [r["corpus"] for r in studies.records(folder, plan)] == [corpus] * len(folders)
  assert json.loads((runs / "ngram" / "ngram.json").read_text())["corpus"] == corpus
  verdicts = _verdicts(folder)
  assert verdicts["C5"].startswith(("does not hold", "inconclusive"))
  assert verdicts["C4"] in ("holds", "does not hold")
  report = (folder / "report.md").read_text()
  again = subprocess.run(cmd, capture_output=True, text=True, env=train_cli.env(1), cwd=tmp_path)
  assert "0 runs trained" in again.stdout
  assert (folder / "report.md").read_text() == report


# ------------------------------------------- what RESULTS.md and the README say (issue 34, 4)

POPULATION = REPO / "benchmarks" / "studies" / "population-v1"


def _results_md() -> str:
  files = studies.markdown_files(STUDY, REPO / "RESULTS.md", sections=SECTIONS)
  return files[REPO / "RESULTS.md"]


def test_results_md_has_no_garbled_sentence_and_no_unqualified_beaten_by():
  """Regenerated from the committed runs: C1's sentence is whole where its list of rates is
  empty (the registered rules write "at lr none"), and no n-gram is "beaten by" a model whose
  difference the study's rule does not count (the Mamba stack's mean is below the 5-gram's,
  not by the rule); the README's headline is the same paragraph."""
  text = _results_md()
  readme = (REPO / "README.md").read_text()
  for found in (text, readme):
    assert "at lr none" not in found
    assert "beaten by" not in found
  assert ("The Mamba stack fails where the INN converges at lr 0.0004; at no rate does the INN "
          "fail where the Mamba stack converges.") in text
  assert ("The Kneser-Ney 5-gram scores 1.8120: no model beats it by the study's rule (mamba - "
          "5-gram -0.0157 [-0.0492, +0.0178]: a lower mean, not a difference; inn, transformer "
          "and lstm are worse).") in text
  assert "The Kneser-Ney 6-gram, the order with the lowest valid BPC (of 1-6), scores 1.7704" \
      in text


def test_the_caveats_beside_the_registered_verdicts():
  """The verdicts stay the registered rules' words; beside them, from the same records: C1
  only at 4e-4 on one seed, the Mamba stack learning slowly, the INN 1.52x its size; C4
  inconclusive (the seeds disagree; seed 1 at 1.456 against 1.5); ties are no difference shown;
  Q1's sign counts, its cause is not established; Holm over the headline's six pairs."""
  verdicts = {k: v["verdict"] for k, v in studies.build(STUDY)["verdicts"].items()}
  assert (verdicts["C1"], verdicts["C4"]) == ("holds", "does not hold")
  text = _results_md()
  assert ("| C1 | **holds** (only at lr 0.0004, on 1 seed; the Mamba stack learns slowly there, "
          "it does not diverge) |") in text
  assert "its valid BPC is still falling at the last validation (2.7099 -> 2.7055)" in text
  assert "1.52x the Mamba stack's parameters (116,867 against 77,027)" in text
  assert "| C4 | **does not hold** (inconclusive: the 2 seeds disagree) |" in text
  assert "seed 1 has neither: its largest in-degree ratio is 1.456 [1.446, 1.466] against the " \
         "hub factor 1.5, its smallest 0.632 [0.623, 0.641] against 0.6" in text
  assert ("| C3 | **does not hold (no communication vs learned: tie; static vs none: worse)** "
          "(tie: no difference shown, not an equivalence) |") in text
  assert "A tie here is no difference shown (3 seeds: intervals with 2 degrees of freedom; no " \
         "equivalence margin registered), not an equivalence." in text
  assert "| inn - no_comm | +0.0075 [-0.0031, +0.0182] | no difference shown |" in text
  assert "| inn - transformer | -0.0264 [-0.0467, -0.0062] | inn better | 0.061 |" in text
  assert "inn - mamba and inn - transformer do not survive it" in text
  assert ("With Holm's correction over the 6 pairs, mamba beats inn and inn beats transformer no "
          "longer count (adjusted p 0.061 and 0.061).") in text
  section = text.split("\n## Scaling the population\n", 1)[1]
  assert "| Q1 | **attention: hurts; workspace: hurts; none: hurts** (its sign counts, its cause " \
         "is not established) |" in section
  for fact in ("every N=256 - N=4 interval's lower end is +0.2064 or above",
               "d_model is 112 at N=256, 64 at N=4",
               "the per-neuron projections in and out hold 57% of the parameters at N=256 "
               "(16-18% at N=4)", "as wide as the neuron: 1 at N=256, 32/33 at N=4",
               "at 2,048,000 tokens every model's valid BPC is still falling at its last "
               "validation (by 0.06-0.11"):
    assert fact in section, fact
  assert section.count("A tie here is no difference shown (2 seeds: intervals with 1 degree of "
                       "freedom; no equivalence margin registered), not an equivalence.") == 3


def test_holm_over_the_headline_pairs():
  """Holm's correction over the six pairs of the main comparison (inn_jax.verdicts.holm):
  mamba - inn and inn - transformer no longer count; transformer - lstm still does."""
  from inn_jax import caveats
  plan = studies.load_plan(STUDY)
  pairs = caveats.holm_pairs(plan, studies.records(STUDY, plan), "main_6m",
                             ["mamba", "inn", "transformer", "lstm"])
  assert len(pairs) == 6 and all(h["counts"] for h in pairs.values())
  assert {pair for pair, h in pairs.items() if h["p_holm"] >= 0.05} == \
      {("mamba", "inn"), ("inn", "transformer")}
  assert round(pairs[("mamba", "inn")]["p_holm"], 4) == 0.0607
  assert round(pairs[("transformer", "lstm")]["p_holm"], 4) == 0.0338


@pytest.mark.parametrize("holds, reverse, sentence", [
    ([], [], "At no rate does the Mamba stack fail where the INN converges; at no rate does the "
             "INN fail where the Mamba stack converges."),
    ([], [0.03], "At no rate does the Mamba stack fail where the INN converges; the INN fails "
                 "where the Mamba stack converges at lr 0.03."),
])
def test_c1s_sentence_is_written_whole_and_nothing_is_added_to_withheld_verdicts(
    plan, holds, reverse, sentence):
  from inn_jax import caveats
  garbled = ("The Mamba stack fails where the INN converges at lr none; the INN fails where the "
             "Mamba stack converges at lr none.")
  rep = {"plan": plan, "records": [], "changed": [], "verdicts": {"C1": {
      "verdict": "does not hold", "lines": ["a table", garbled],
      "mamba_fails_inn_converges": holds, "inn_fails_mamba_converges": reverse}}}
  notes = caveats.notes(rep)
  assert caveats.apply(rep["verdicts"]["C1"]["lines"], notes["C1"]) == ["a table", sentence]
  assert caveats.notes({**rep, "changed": ["the plan changed"]}) == {}


def test_q1s_share_of_the_per_neuron_projections_is_the_models(tmp_path):
  """The caveat's 57% (2 N d_model d_neuron of the parameters) is the N = 256 model's own
  neuron_in_DE and neuron_out_ED."""
  study = driver.Study(POPULATION, tmp_path, allow_dirty=True)
  c = config_lib.from_argv(study.command("attention-n256", 2e-2, 0, 1000, tmp_path / "m")[2:])
  model = nnx.eval_shape(lambda: build_model(c.model, 27, nnx.Rngs(0, dropout=1)))
  leaves = jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]
  size = {jax.tree_util.keystr(path): int(np.prod(x.shape)) for path, x in leaves}
  projections = sum(v for k, v in size.items() if "neuron_in_DE" in k or "neuron_out_ED" in k)
  assert projections == 2 * 256 * 112 * 1 and sum(size.values()) == 100_531
  assert f"{projections / sum(size.values()):.0%}" == "57%"


def test_readme_results_say_no_more_than_the_report():
  """Every 4-decimal number and training-FLOP count in the README's results is one the report
  writes (RESULTS.md or a study's report.md), and the readings the report qualifies are not
  repeated bare: no "ties", "matches ... quality", "never measurably", "sit at", "beaten by"."""
  readme = (REPO / "README.md").read_text()
  part = readme[readme.index("## Results"):readme.index("## Reference")]
  written = _results_md() + "".join(
      studies.markdown_files(f)[f / "report.md"] for f in (STUDY, POPULATION))
  numbers = set(re.findall(r"(?<![\d.])\d\.\d{4}(?!\d)", part))
  assert len(numbers) > 40 and not sorted(n for n in numbers if n not in written)
  flops = set(re.findall(r"(?<![\d.])(\d\.\d\d)e12", part))
  assert flops and not sorted(f for f in flops if f"{f}e+12" not in written)
  for bare in (r"\bties\b", r"\bmatches dense attention", r"never measurably", r"\bsit at\b",
               r"beaten by", r"as good as anything"):
    assert not re.search(bare, part), bare
