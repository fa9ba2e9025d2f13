"""inn_jax.train.validate: every bad config fails with a message naming the key and the fix,
before any data is read or anything is compiled."""

import subprocess
import sys

import pytest

from inn_jax import data
from inn_jax.train import loop, runner, step, validate
from tests import tiny as testing


def set_(config, key, value):
  *parents, leaf = key.split(".")
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = value


@pytest.mark.parametrize("changes, message", [
    ({"model.n_heads": 3}, r"model.n_heads: 3 heads do not divide the width d_model=16"),
    ({"data.batch_size": 6}, r"data.batch_size: 6 is not divisible by the data-parallel size 4"),
    ({"data.eval_batch_size": 2, "mesh.data": 4}, r"eval_batch_size: 2 .* size 4"),
    ({"mesh.neuron": 2, "model.n_neurons": 3},
     r"neuron axis size 2 does not divide model.n_neurons=3"),
    ({"mesh.data": 4, "mesh.neuron": 2}, r"needs more than the 4 devices"),
    ({"data.name": "text9"}, r"data.name: unknown dataset 'text9'; choose one of .*text8"),
    ({"model.kind": "gru"}, r"model.kind: unknown model 'gru'; choose one of .*inn"),
    ({"model.d_model": 0}, r"model.d_model: must be positive, got 0"),
    ({"model.n_neurons": -2}, r"model.n_neurons: must be positive"),
    ({"data.seq_len": 0}, r"data.seq_len: must be positive"),
    ({"train.steps": 0}, r"train.steps: must be positive"),
    ({"train.log_every": -1}, r"train.log_every: must be >= 0"),
    ({"train.microbatches": -1}, r"train.microbatches: must be >= 0"),
    ({"train.microbatches": 4}, r"train.microbatches: 4 micro-batches x data-parallel size 4 "
     r"do not divide data.batch_size=8; use a batch size that is a multiple of 16"),
    ({"eval.microbatches": 3}, r"eval.microbatches: 3 micro-batches x data-parallel size 4 "
     r"do not divide data.eval_batch_size=8; use a batch size that is a multiple of 12"),
    ({"eval.microbatches": -1}, r"eval.microbatches: must be >= 0"),
    ({"model.attn_dropout": 1.5}, r"model.attn_dropout: 1.5 is not a dropout rate in \[0, 1\)"),
    ({"model.attn_dropout": -0.5}, r"model.attn_dropout: -0.5 is not a dropout rate"),
    ({"model.attn_dropout": 1.0}, r"model.attn_dropout: 1.0 is not a dropout rate"),
    ({"model.dtype": "foo"}, r"model.dtype: 'foo' is not a supported compute dtype; choose one "
     r"of \('float32', 'bfloat16', 'float16'\)"),
    ({"optim.lr": 0.0}, r"optim.lr: must be positive"),
    ({"optim.pct_start": 1.0}, r"optim.pct_start: must be in \(0, 1\)"),
    ({"mode": "serve"}, r"mode: 'serve' is not one of"),
    ({"eval.splits": ("valid", "train")}, r"eval.splits: unknown splits \['train'\]"),
])
def test_bad_config_fails_before_reading_data(tmp_path, monkeypatch, changes, message):
  config = testing.tiny_config(tmp_path)
  for key, value in changes.items():
    set_(config, key, value)

  def no_data(*_):
    raise AssertionError("data was read before the config was checked")

  monkeypatch.setattr(data, "load_corpus", no_data)
  with pytest.raises(validate.ConfigError, match=message):
    runner.Run(config)


def test_dropout_of_every_model_is_checked(tmp_path):
  for kind, key in (("lstm", "dropout"), ("transformer", "dropout")):
    config = testing.tiny_config(tmp_path, kind)
    config.model[key] = 1.2
    with pytest.raises(validate.ConfigError, match=rf"model.{key}: 1.2 is not a dropout rate"):
      validate.check_config(config, 4)


def test_split_from_the_command_line_reaches_the_corpus(tmp_path):
  from tests import train_cli
  config = train_cli.load(train_cli.config_file(tmp_path, 2), data__split="0.8,0.1,0.1")
  corpus = data.load_corpus(config.data)
  assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (4800, 600, 600)


def test_neuron_axis_only_for_the_inn(tmp_path):
  config = testing.tiny_config(tmp_path, "lstm")
  config.mesh.neuron = 2
  with pytest.raises(validate.ConfigError, match="only the INN has a neuron axis"):
    validate.check_config(config, 4)


def test_length_longer_than_a_split_fails_before_compiling(tmp_path, monkeypatch):
  config = testing.tiny_config(tmp_path)  # 6000 characters: valid and test have 300.
  config.data.seq_len = 400

  def no_compile(*_, **__):
    raise AssertionError("compiled before the lengths were checked")

  monkeypatch.setattr(loop, "compile_train_step", no_compile)
  monkeypatch.setattr(step, "build", no_compile)  # Nor the model built.
  with pytest.raises(validate.ConfigError,
                     match=r"data.seq_len: 400 is longer than the valid split .*at most 299"):
    runner.Run(config)


def test_command_line_prints_the_message(tmp_path):
  out = subprocess.run(
      [sys.executable, "train.py", "--config", "configs/quickstart.py",
       "--config.model.n_heads=5", f"--config.workdir={tmp_path}"],
      capture_output=True, text=True, timeout=120)
  assert out.returncode == 2
  assert out.stderr.startswith("error: config.model.n_heads: 5 heads do not divide the width "
                               "d_model=64")
  assert len(out.stderr.strip().splitlines()) == 1  # One line, no traceback.
