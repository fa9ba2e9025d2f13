"""The study population-v1 (issue 23): its plan is runs train.py accepts, every model about 100k
parameters and within 3% of the attention model's at its N (claims-v2's C3 rule), treated
alike; its rules (its own module, inn_jax/population_rules.py) are hashed at registration like
claims-v2's, and an edit to them after the first run withholds its verdicts; its questions read
paired differences."""

import json
import shutil

import pytest

from inn_jax import population_rules, studies
from tests.test_study import REPO, _params, driver, fake_run

STUDY = REPO / "benchmarks" / "studies" / "population-v1"


@pytest.fixture(scope="module")
def plan():
  return studies.load_plan(STUDY)


def test_every_model_is_about_100k_and_matched_at_its_n(plan, tmp_path):
  study = driver.Study(STUDY, tmp_path, allow_dirty=True)
  params, rules = {}, plan["RULES"]["population"]
  for model in plan["MODELS"]:
    c, params[model] = _params(study.command(model, 5e-3, 1, 1000, tmp_path / model))
    kind, n = model.rsplit("-n", 1)
    assert (c.model.communication, c.model.n_neurons) == (kind, int(n))
    assert (c.seed, c.data.seed, c.optim.lr, c.train.steps) == (1, 1, 5e-3, 1000)
    assert c.model.attn_dropout == 0.0 and c.model.tie_embeddings is False
    assert c.model.n_heads == 1 and c.model.workspace_slots == 16
  for n in rules["ns"]:
    at_n = [params[population_rules.name(k, n)] for k in rules["kinds"]]
    assert all(93_000 <= p <= 107_000 for p in at_n), at_n
    assert all(abs(p - at_n[0]) <= 0.03 * at_n[0] for p in at_n), (n, at_n)  # Of attention's.


def test_rules_are_the_plans_own_module_and_an_edit_withholds_the_verdicts(plan, tmp_path):
  folder = tmp_path / "population"
  folder.mkdir()
  shutil.copy(STUDY / "plan.py", folder / "plan.py")
  reg = studies.register(folder, plan, "c0")
  assert set(reg["rules_files"]) == {"population_rules", "claims", "stats"}
  assert studies.changed(folder, plan) == []
  # The registration as it would read had population_rules.py been different then.
  reg["rules_files"]["population_rules"] = "0" * 64
  (folder / "registration.json").write_text(json.dumps(reg))
  assert any("population_rules.py's hash" in d for d in studies.changed(folder, plan))
  verdicts = studies.build(folder)["verdicts"]
  assert set(verdicts) == {"Q1", "Q2", "Q3"}
  assert all(v["verdict"].startswith(studies.WITHHELD) for v in verdicts.values())


def fake_population(plan, tmp_path):
  """A registered copy of the plan with two seeds of five models: workspace better than
  attention by a clear, consistent margin at N=4; a tie (seeds disagree) at N=16; N helps
  attention (256 below 4 on both seeds); N=64 not run."""
  folder = tmp_path / "population"
  folder.mkdir()
  shutil.copy(STUDY / "plan.py", folder / "plan.py")
  scores = {"attention-n4": (2.30, 2.31), "workspace-n4": (2.20, 2.215),
            "attention-n16": (2.25, 2.20), "workspace-n16": (2.20, 2.25),
            "attention-n256": (2.10, 2.105)}
  best = plan["RATES"][1]  # The sweep's lowest valid BPC, inside the range: no extension.
  for model, per_seed in scores.items():
    for lr in plan["RATES"]:
      fake_run(folder, plan, "population", model, lr, 0, 1000,
               valid=per_seed[0] + (0 if lr == best else 0.1), test=per_seed[0])
    fake_run(folder, plan, "population", model, best, 1, 1000, valid=per_seed[1],
             test=per_seed[1])
  studies.register(folder, plan, "c0")
  return folder


def test_the_questions_read_paired_differences(plan, tmp_path):
  folder = fake_population(plan, tmp_path)
  v = studies.build(folder)["verdicts"]
  assert "N=4 workspace better" in v["Q2"]["verdict"] and "N=16 tie" in v["Q2"]["verdict"]
  assert "attention: helps" in v["Q1"]["verdict"]
  assert "N=64 not run" in v["Q2"]["verdict"]
  text = studies.markdown_files(folder)[folder / "report.md"]
  assert "## The study's questions" in text and "| 4 | 2.3050 ± 0.0071 (n=2)" in text


def test_the_population_section_and_figure(plan, tmp_path):
  """As a section of another study's RESULTS.md: its title, links, verdicts and N x kind
  table; BPC against N (and FLOPs) per kind, each seed kept, drawn into population.png."""
  folder = fake_population(plan, tmp_path)
  points = studies.population_points(plan, studies.build(folder)["records"])
  assert [q["n"] for q in points["attention"]] == [4, 16, 256]
  assert points["workspace"][0]["per_seed"] == [2.20, 2.215]
  assert abs(points["workspace"][0]["test_bpc"] - 2.2075) < 1e-9
  main = tmp_path / "main"
  main.mkdir()
  shutil.copy(STUDY.parent / "claims-v2" / "plan.py", main / "plan.py")
  studies.write(main, tmp_path / "RESULTS.md", sections=(folder,))
  text = (tmp_path / "RESULTS.md").read_text()
  assert "--results_md RESULTS.md --section population`" in text
  section = text.split("\n## Scaling the population\n", 1)[1]
  assert "[`population/report.md`](population/report.md)" in section
  assert "### Q2: " in section and "| 4 | 2.3050 ± 0.0071 (n=2)" in section
  assert "**In progress**: 5 of 12 models have all their runs" in section
  assert "population/attention-n64" in section and "population/attention-n4," not in section
  assert "![population](population/population.png)" in section
  assert (folder / "population.png").stat().st_size > 10_000
  assert "population" in json.loads((folder / "report.json").read_text())


def test_a_section_without_results_md_is_a_named_error(capsys):
  with pytest.raises(SystemExit) as e:
    studies.main([str(STUDY), "--section", str(STUDY)])
  assert e.value.code == 2
  assert "--section needs --results_md" in capsys.readouterr().err
