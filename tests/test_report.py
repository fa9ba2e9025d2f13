"""inn_jax.report on tiny runs made here (a Mamba stack and an LSTM, 2 seeds each, and the LSTM
at another learning rate; one layer each, the fastest to compile). The claims' rules are
tests/test_claims.py's.

The tables are checked against the runs' own files, read here with json alone; the LSTM's
training FLOPs against a count written out by hand.
"""

import json
import pathlib
import shutil
import statistics

import numpy as np
import pytest

from inn_jax import report
from inn_jax.train import runner
from tests import tiny as testing
from tests import train_cli

SEEDS = (0, 1)
STEPS = 4
PNG = b"\x89PNG\r\n\x1a\n"


def _config(root, kind, seed, lr=None):
  c = testing.tiny_config(root, kind, steps=STEPS)
  c.seed = seed
  c.mesh.data = 1
  c.model.n_layers = 1
  c.train.update(eval_every=2, log_every=1)
  if lr is not None:
    c.optim.lr = lr
  name = f"{kind}-s{seed}" if lr is None else f"{kind}-lr{lr:g}-s{seed}"
  c.workdir = str(pathlib.Path(root) / "runs" / "tiny" / name)
  return c


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """runs/tiny/<run>: mamba and lstm, seeds 0 and 1, and lstm at another rate (seed 0)."""
  root = tmp_path_factory.mktemp("report")
  configs = [_config(root, kind, seed) for kind in ("mamba", "lstm") for seed in SEEDS]
  configs.append(_config(root, "lstm", 0, lr=1e-2))
  for c in configs:
    runner.train(c)
  return root, configs


def _read(workdir, name):
  return json.loads((pathlib.Path(workdir) / name).read_text())


def _table(md: str, study: str) -> dict:
  """{run name: {column: cell}} of `study`'s table in report.md."""
  lines = md.split(f"### {study}\n", 1)[1].strip().splitlines()
  header = [c.strip() for c in lines[0].strip("|").split("|")]
  rows = {}
  for line in lines[2:]:
    if not line.startswith("|"):
      break
    cells = [c.strip() for c in line.strip("|").split("|")]
    rows[cells[0]] = dict(zip(header, cells))
  return rows


def _lstm_train_flops_per_token(model, vocab):
  """3 x the LSTM's forward matmuls per token: input and recurrent gates per layer, tied head."""
  u, per_token = model["hidden"], 0
  for _ in range(model["n_layers"]):
    d_in = u  # d_embed = hidden.
    per_token += 2 * d_in * 4 * u + 2 * u * 4 * u
  return 3 * (per_token + 2 * u * vocab)


@pytest.fixture(scope="module")
def written(runs, tmp_path_factory):
  root, _ = runs
  out = tmp_path_factory.mktemp("out")
  rep = report.write([root / "runs"], out)
  return rep, out


def test_table_numbers_are_the_files_numbers(runs, written):
  root, configs = runs
  rep, out = written
  table = _table((out / "report.md").read_text(), "tiny")
  lr = configs[2].optim.lr
  assert set(table) == {"mamba", f"lstm lr={lr}", "lstm lr=0.01"}, table.keys()
  by_row = {"mamba": configs[:2], f"lstm lr={lr}": configs[2:4], "lstm lr=0.01": configs[4:]}
  for name, cs in by_row.items():
    results = [_read(c.workdir, "results.json") for c in cs]
    cells = table[name]
    assert cells["seeds"] == str(len(cs))
    assert cells["params"] == f"{results[0]['params']:,}"
    assert cells["tokens"] == f"{results[0]['tokens_seen']:,}"
    assert results[0]["tokens_seen"] == STEPS * 8 * 16
    for column, split, mode in (("valid BPC fresh", "valid", "reset"),
                                ("test BPC fresh", "test", "reset"),
                                ("valid carried", "valid", "carried"),
                                ("test carried", "test", "carried")):
      values = [r["scores"][split][mode]["bpc"] for r in results]
      want = f"{statistics.mean(values):.4f}"
      if len(values) > 1:
        want += f" ({min(values):.4f}, {max(values):.4f})"
      assert cells[column] == want, (name, column)
    walls = [r["wall_time_s"] for r in results]
    trains = [r["train_time_s"] for r in results]
    assert cells["wall s (train s)"] == (f"{statistics.mean(walls):.0f} "
                                         f"({statistics.mean(trains):.0f})")
  assert table["mamba"]["form"] == table["lstm lr=0.01"]["form"] == "-"


def test_the_inn_form_names_its_options(tmp_path):
  config = json.loads(json.dumps(testing.tiny_config(tmp_path, "inn").to_dict()))
  config["model"].update(neuron_identity="norm", neuron_params="ssm", communication="static")
  assert report.form(config) == "norm/ssm/static, N=4"


def test_seeds_are_grouped_and_the_sweep_found(runs, written):
  rep, _ = written
  lr = f"lstm lr={runs[1][2].optim.lr}"
  rows = {r["name"]: r for r in rep["studies"]["tiny"]["rows"]}
  assert rows["mamba"]["seeds"] == [0, 1] and rows[lr]["seeds"] == [0, 1]
  assert rows["lstm lr=0.01"]["seeds"] == [0]
  assert rep["studies"]["tiny"]["sweeps"] == [[lr, "lstm lr=0.01"]]
  assert len(rep["unique_runs"]) == 5


def test_training_flops_are_the_runs_count(runs, written):
  _, configs = runs
  rep, out = written
  name = f"lstm lr={configs[2].optim.lr}"
  row = next(r for r in rep["studies"]["tiny"]["rows"] if r["name"] == name)
  results = _read(configs[2].workdir, "results.json")
  if "flops_per_token" in results:  # The trainer's own count (inn_jax.train.model_summary).
    got = results["flops_per_token"]
    want, source = (got["train"] if isinstance(got, dict) else got), "results.json"
  else:
    config = _read(configs[2].workdir, "config.json")
    want, source = _lstm_train_flops_per_token(config["model"], config["vocab_size"]), "computed"
  assert (row["flops_source"], row["flops_per_token"]) == (source, want)
  cell = _table((out / "report.md").read_text(), "tiny")[name]["train FLOPs"]
  assert cell == f"{want * results['tokens_seen']:.3g}"


def test_training_flops_computed_without_a_count_in_the_files(runs, tmp_path):
  """Workdirs of before the trainer counted FLOPs: 3 x the forward's matmuls, per token."""
  _, configs = runs
  for c in configs[2:4]:
    dest = tmp_path / "old" / pathlib.Path(c.workdir).name
    shutil.copytree(c.workdir, dest, ignore=shutil.ignore_patterns(
        "checkpoints", "best", "tb", "summary.*"))
    results = _read(dest, "results.json")
    results.pop("flops_per_token", None)
    (dest / "results.json").write_text(json.dumps(results))
  (row,) = report.build([tmp_path / "old"])["studies"]["old"]["rows"]
  config = _read(configs[2].workdir, "config.json")
  fpt = _lstm_train_flops_per_token(config["model"], config["vocab_size"])
  assert (row["flops_source"], row["flops_per_token"]) == ("computed", fpt)
  assert row["train_flops"]["mean"] == fpt * STEPS * 8 * 16


def test_flops_per_token_from_results_json_is_used(runs, tmp_path):
  _, configs = runs
  for c in configs[2:4]:
    dest = tmp_path / "other" / pathlib.Path(c.workdir).name
    shutil.copytree(c.workdir, dest, ignore=shutil.ignore_patterns("checkpoints", "best", "tb"))
    results = _read(dest, "results.json")
    (dest / "results.json").write_text(json.dumps({**results, "flops_per_token": 1234.0}))
  (row,) = report.build([tmp_path / "other"])["studies"]["other"]["rows"]
  assert (row["flops_source"], row["flops_per_token"]) == ("results.json", 1234.0)
  assert row["train_flops"]["mean"] == 1234.0 * STEPS * 8 * 16


def test_plots_are_png(written):
  rep, out = written
  assert rep["studies"]["tiny"]["plots"] == ["tiny_valid_bpc.png", "tiny_lr_sweep.png"]
  import matplotlib.image
  for name in rep["studies"]["tiny"]["plots"]:
    data = (out / name).read_bytes()
    assert data.startswith(PNG) and len(data) > 5000, name
    image = matplotlib.image.imread(out / name)
    assert image.ndim == 3 and image.shape[0] > 200 and np.ptp(image) > 0, name
    assert f"]({name})" in (out / "report.md").read_text()


def test_bad_input_is_one_line_and_exit_2(runs, tmp_path, capsys):
  root, configs = runs
  err = train_cli.exits_with_one_line(report.main, [str(tmp_path / "nope"), "--out",
                                                    str(tmp_path / "o")], capsys)
  assert "no such workdir" in err
  half = tmp_path / "half" / "run"
  half.mkdir(parents=True)
  shutil.copy(pathlib.Path(configs[0].workdir) / "config.json", half / "config.json")
  err = train_cli.exits_with_one_line(report.main, [str(half), "--out", str(tmp_path / "o")],
                                      capsys)
  assert "results.json" in err and str(half) in err
