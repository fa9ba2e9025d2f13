"""A resumed run is the same run (inn_jax/train/workdir.py, runner.Run): a changed config is
refused before any compilation, naming each key with its old and new value; keys that cannot
change the results may differ; train.allow_changes=true resumes and records the change; the
micro-batch count chosen at the first start is reused; config.json is written once and
metrics.jsonl holds each step once."""

import hashlib
import json
import pathlib
import shutil

import pytest

from inn_jax.ops import scan
from inn_jax.train import loop, memory, runner, validate, workdir
from tests import tiny as testing
from tests import train_cli
from tests.train_cli import assert_same_run, step_dirs


def stopped_run(root, steps=4, stop_at=2, **overrides):
  """A tiny run on one device (fast compiles) stopped at `stop_at` (train.stop_at), and its
  config file, which has mesh.data=1."""
  path = config_file(root, steps)
  config = train_cli.load(path, train__stop_at=stop_at, train__save_every=stop_at, **overrides)
  assert runner.train(config) == {"stopped_at": stop_at}
  return path, config


def config_file(root, steps):
  return train_cli.config_file(root, steps, mesh_data=1)


def sha(path) -> str:
  return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def test_a_changed_config_is_refused_naming_each_key_before_compiling(tmp_path):
  path, config = stopped_run(tmp_path)
  saved = sha(pathlib.Path(config.workdir) / "config.json")
  changed = train_cli.load(path, train__steps=6, optim__lr=0.5, data__stream="random",
                           data__seed=7, seed=11)

  def refused():
    with pytest.raises(validate.ConfigError) as info:
      runner.Run(changed)
    return str(info.value)

  message, compiled = train_cli.without_compiling(refused)
  w = pathlib.Path(config.workdir).absolute()
  assert message == (
      f"{w} holds a run whose config differs: data.seed: 0 -> 7; data.stream: 'contiguous' -> "
      "'random'; optim.lr: 0.0004 -> 0.5; seed: 0 -> 11; train.steps: 4 -> 6. A resumed run must "
      f"be the same run: run it with its saved config ({w}/config.json), use another "
      "--config.workdir, or add --config.train.allow_changes=true to resume with these changes "
      f"(recorded in {w}/config_history.jsonl).")
  assert not compiled
  assert sha(w / "config.json") == saved  # Not rewritten.


@pytest.mark.slow
def test_keys_that_cannot_change_the_results_may_differ(tmp_path):
  path, config = stopped_run(tmp_path / "a", steps=6, stop_at=3)
  moved = tmp_path / "b"
  shutil.copytree(config.workdir, moved)
  resumed = train_cli.load(path, workdir=moved, train__keep=1, train__async_save="true",
                           train__log_every=2, train__save_every=3, log__progress="true",
                           mode="train")
  assert runner.train(resumed)["steps"] == 6
  assert not (moved / workdir.HISTORY_FILE).exists()
  whole = train_cli.load(path, workdir=tmp_path / "whole", train__save_every=3)
  runner.train(whole)
  assert_state_equal(whole, resumed)


def assert_state_equal(a, b):
  train_cli.assert_bitwise_equal(train_cli.restore(a)[0], train_cli.restore(b)[0])


@pytest.mark.slow
def test_allow_changes_resumes_and_records_the_change(tmp_path):
  path, config = stopped_run(tmp_path, steps=6, stop_at=2)
  w = pathlib.Path(config.workdir)
  saved = sha(w / "config.json")
  changed = train_cli.load(path, optim__lr=1e-3, train__stop_at=4, train__save_every=2,
                           train__allow_changes="true")
  assert runner.train(changed) == {"stopped_at": 4}
  rows = [json.loads(line) for line in open(w / workdir.HISTORY_FILE)]
  assert [(r["step"], r["changes"]) for r in rows] == [(2, {"optim.lr": [0.0004, 0.001]})]
  assert sha(w / "config.json") == saved
  # The accepted change is part of the run now: the changed config resumes as it is...
  assert runner.train(train_cli.load(path, optim__lr=1e-3, train__save_every=2))["steps"] == 6
  # ... and the first config is the one that differs.
  with pytest.raises(validate.ConfigError, match=r"config differs: optim.lr: 0.001 -> 0.0004\."):
    runner.Run(train_cli.load(path, train__save_every=2))


def test_a_model_of_another_layout_cannot_resume_even_with_allow_changes(tmp_path):
  path, _ = stopped_run(tmp_path)
  with pytest.raises(validate.ConfigError,
                     match=r"hold a training state of another layout than this config's model "
                           r"\(model.d_model: 16 -> 24\): they cannot be restored"):
    runner.Run(train_cli.load(path, model__d_model=24, train__allow_changes="true"))


def test_another_corpus_is_refused(tmp_path):
  path, config = stopped_run(tmp_path)
  testing.write_corpus(tmp_path / "tiny.txt", seed=1)  # The same 9 symbols, another text.
  with pytest.raises(validate.ConfigError, match=r"config differs: corpus_sha256: '[0-9a-f]{64}' "
                                                 r"-> '[0-9a-f]{64}'\."):
    runner.Run(train_cli.load(path, train__save_every=2))
  (tmp_path / "tiny.txt").write_text("xyz " * 2000)  # Another vocabulary.
  with pytest.raises(ValueError, match=r"the corpus now has another vocabulary \(4 symbols\) "
                                       r"than the run trained on \(9 symbols"):
    runner.Run(train_cli.load(path, train__save_every=2, train__allow_changes="true"))


def _step_bytes(config, ks) -> dict:
  """{k: XLA's bytes per device of config's train step with k micro-batches}."""
  r, need = runner.Run(config), {}
  for k in ks:
    r.microbatches["train.microbatches"] = k
    need[k] = memory.step_bytes(r.compile_train_step()[0])
  r.checkpoints.close()
  return need


@pytest.mark.slow
def test_the_microbatch_count_chosen_at_the_first_start_is_reused(tmp_path, monkeypatch,
                                                                   capsys):
  path = config_file(tmp_path, 4)
  keys = dict(train__microbatches=0, train__save_every=2, data__batch_size=16)  # K in 1, 2, 4.
  probe = train_cli.load(path, workdir=tmp_path / "probe", **keys)
  need = _step_bytes(probe, (1, 2))
  assert need[1] > need[2]
  budget = {"bytes": need[2]}  # The first start: only 2 micro-batches fit.
  monkeypatch.setattr(memory, "budget", lambda device: budget["bytes"])
  config = train_cli.load(path, train__stop_at=2, **keys)
  runner.train(config)
  assert "2 micro-batches of 8 x 16" in capsys.readouterr().out
  saved = json.loads((pathlib.Path(config.workdir) / "config.json").read_text())
  assert saved["train"]["microbatches"] == 0 and saved["resolved"]["train.microbatches"] == 2

  budget["bytes"] = need[2] - 1  # A busier machine: the saved count no longer fits.
  w = pathlib.Path(config.workdir).absolute()
  with pytest.raises(memory.StepMemoryError) as info:
    runner.train(train_cli.load(path, **keys))
  assert str(info.value).startswith(
      "train.microbatches: this run uses 2 micro-batch(es) of 8 x 16, chosen at its first "
      f"start (saved in {w}/config.json); the step needs ")
  assert str(info.value).endswith(
      "GiB is available now. Free memory, or resume with another count, "
      "--config.train.microbatches=N --config.train.allow_changes=true (the dropout masks "
      "change).")
  assert step_dirs(w) == [2]

  budget["bytes"] = need[1]  # A quieter machine, where 1 would fit: still 2, the same run.
  results = runner.train(train_cli.load(path, **keys))
  assert results["microbatches"] == {"train": 2, "eval": 1}
  whole = train_cli.load(path, workdir=tmp_path / "whole", **{**keys, "train__microbatches": 2})
  runner.train(whole)
  assert_state_equal(whole, config)
  # An explicit count must be the saved one.
  with pytest.raises(validate.ConfigError, match=r"config differs: train.microbatches: 2 -> 4\."):
    runner.Run(train_cli.load(path, **{**keys, "train__microbatches": 4}))


def test_config_json_is_written_once_and_metrics_hold_each_step_once(tmp_path):
  path = config_file(tmp_path, 6)
  keys = dict(train__save_every=3, train__eval_every=2, model__attn_dropout=0.2)
  whole = train_cli.load(path, workdir=tmp_path / "whole", **keys)
  runner.train(whole)
  # A run killed after logging step 6, before its checkpoint: a copy without checkpoint 6, and
  # the line a kill can tear.
  killed = train_cli.load(path, workdir=tmp_path / "killed", **keys)
  w = pathlib.Path(killed.workdir)
  shutil.copytree(whole.workdir, w)
  for sub in ("checkpoints", "best"):
    shutil.rmtree(w / sub / "6", ignore_errors=True)
  (w / "results.json").unlink()
  with open(w / "metrics.jsonl", "a") as f:
    f.write('{"step": 7, "spl')
  config_stat = (w / "config.json").stat()
  runner.train(killed)
  assert (w / "config.json").stat().st_mtime_ns == config_stat.st_mtime_ns
  assert sha(w / "config.json") == sha(pathlib.Path(whole.workdir) / "config.json")
  assert_same_run(whole, killed)  # Includes: the same metrics.jsonl rows, each step once.
  steps = [(r["step"], r["split"]) for r in map(json.loads, open(w / "metrics.jsonl"))]
  assert len(steps) == len(set(steps)) == 6 + 3


def test_neutral_keys_are_explicit():
  assert workdir.is_neutral("log.progress") and workdir.is_neutral("train.stop_at")
  assert workdir.is_neutral("data.path") and workdir.is_neutral("distributed.process_id")
  for key in ("train.steps", "train.eval_every", "train.eval_windows", "train.microbatches",
              "data.seed", "optim.lr", "seed", "model.dtype", "mesh.data", "logx"):
    assert not workdir.is_neutral(key), key


def test_validation_of_a_stopped_step_is_left_to_the_resumed_run(tmp_path):
  """train.stop_at at a step due for validation saves and stops; the resumed run validates it
  first, so that its best checkpoint is the uninterrupted run's."""
  path, config = stopped_run(tmp_path, steps=4, stop_at=2, train__eval_every=2)
  rows = [json.loads(line) for line in open(pathlib.Path(config.workdir) / "metrics.jsonl")]
  assert [r["step"] for r in rows if r["split"] == "valid"] == []
  meta = train_cli.restore(config)[1]
  assert loop.validation_pending(meta, config.train, config.train.steps)
  resumed = train_cli.load(path, train__eval_every=2, train__save_every=2)
  runner.train(resumed)
  rows = [json.loads(line) for line in open(pathlib.Path(config.workdir) / "metrics.jsonl")]
  assert [r["step"] for r in rows if r["split"] == "valid"] == [2, 4]


def test_auto_scan_resumes_on_the_path_its_first_start_ran(tmp_path, monkeypatch):
  """model.scan_method="auto" may resolve otherwise after an upgrade or on another machine (a
  compiler installed: "blocked" -> "cpu_kernel"); the paths agree only to float rounding, so a
  resumed run keeps the saved path where it runs, and records the change where it does not."""
  # The first start, on a machine where "auto" resolves "blocked" (no compiler for cpu_kernel).
  monkeypatch.setattr(scan, "auto_method", lambda: "blocked")
  path, config = stopped_run(tmp_path, model__scan_method="auto")
  monkeypatch.undo()
  w = pathlib.Path(config.workdir)
  record = json.loads((w / "config.json").read_text())
  assert record["resolved"]["scan_method"] == "blocked"
  elsewhere = tmp_path / "elsewhere"
  shutil.copytree(w, elsewhere)
  record["resolved"]["scan_method"] = "pallas"  # As a first start on a GPU would have saved.
  (elsewhere / "config.json").write_text(json.dumps(record))

  resumed = runner.train(train_cli.load(path, model__scan_method="auto"))
  assert resumed["scan_method"] == "blocked" and resumed["steps"] == 4
  assert not (w / workdir.HISTORY_FILE).exists()
  whole = train_cli.load(path, workdir=tmp_path / "whole", model__scan_method="blocked")
  runner.train(whole)
  assert_state_equal(whole, config)

  # The Pallas path does not run on this CPU: "auto" resolves anew, and says so in the history.
  moved = runner.train(train_cli.load(path, workdir=elsewhere, model__scan_method="auto"))
  assert moved["scan_method"] == scan.auto_method() != "pallas" and moved["steps"] == 4
  rows = [json.loads(line) for line in open(elsewhere / workdir.HISTORY_FILE)]
  assert [(r["step"], r["changes"]) for r in rows] == [
      (2, {"scan_method": ["pallas", scan.auto_method()]})]
  # The recorded change is part of the run: resuming it again changes nothing more.
  again = runner.Run(train_cli.load(path, workdir=elsewhere, model__scan_method="auto",
                                    train__steps=6, train__allow_changes="true"))
  assert again.changes == {"train.steps": (4, 6)}
  again.checkpoints.close()
