"""inn_jax.train.config: loading config files with variants, typed overrides, bad keys."""

import pytest

from inn_jax.train import config as config_lib


def test_load_variant_and_paper_form():
  c = config_lib.load("configs/text8.py:inn_paper")
  assert c.name == "text8:inn_paper"
  assert (c.model.kind, c.model.neuron_identity, c.model.embed_init) == ("inn", "none", "normal")
  assert c.model.tie_embeddings and c.optim.decay_mask == "all"
  d = config_lib.load("configs/text8.py")
  assert d.name == "text8:inn" and d.model.neuron_identity == "none"
  assert (c.model.neuron_params, d.model.neuron_params) == ("shared", "full")
  assert d.optim.decay_mask == "matrices"
  assert config_lib.load("configs/text8.py:no_comm").model.communication == "none"
  assert config_lib.load("configs/text8.py:static_comm_paper").model.communication == "static"


def test_unknown_variant_lists_the_valid_ones():
  with pytest.raises(ValueError, match="unknown variant 'lstm_paper'.*inn_paper"):
    config_lib.load("configs/text8.py:lstm_paper")


def test_missing_file():
  with pytest.raises(FileNotFoundError, match="no such config file"):
    config_lib.load("configs/nope.py")


def test_overrides_are_typed():
  c = config_lib.from_argv([
      "--config", "configs/quickstart.py", "--config.train.steps=7", "--config.optim.lr", "1e-3",
      "--config.optim.cycle_momentum=false", "--config.model.dtype=bfloat16",
      "--config.eval.splits=test", "--config.data.max_chars=5000",
      "--config.data.path=data/x.txt"])
  assert c.train.steps == 7 and isinstance(c.train.steps, int)
  assert c.optim.lr == 1e-3 and c.optim.cycle_momentum is False
  assert c.model.dtype == "bfloat16" and c.eval.splits == ("test",)
  assert c.data.max_chars == 5000 and c.data.path == "data/x.txt"


def test_unknown_key_fails_and_lists_valid_keys():
  with pytest.raises(ValueError, match=r"unknown key 'stepz' in config.train; valid keys: .*steps"):
    config_lib.from_argv(["--config=configs/quickstart.py", "--config.train.stepz=3"])
  with pytest.raises(ValueError, match="unknown key 'nope' in config"):
    config_lib.from_argv(["--config=configs/quickstart.py", "--config.nope.x=3"])


def test_bad_values_and_arguments():
  with pytest.raises(ValueError, match="train.steps=many"):
    config_lib.from_argv(["--config=configs/quickstart.py", "--config.train.steps=many"])
  with pytest.raises(ValueError, match="expected true/false"):
    config_lib.from_argv(["--config=configs/quickstart.py", "--config.log.progress=maybe"])
  with pytest.raises(ValueError, match="is a section"):
    config_lib.from_argv(["--config=configs/quickstart.py", "--config.model=inn"])
  with pytest.raises(ValueError, match="missing --config"):
    config_lib.from_argv(["--config.train.steps=3"])
  with pytest.raises(ValueError, match="unknown argument '--steps=3'"):
    config_lib.from_argv(["--config=configs/quickstart.py", "--steps=3"])


def test_loaded_config_is_locked():
  c = config_lib.load("configs/quickstart.py")
  with pytest.raises(AttributeError):
    c.trian = 3


@pytest.mark.parametrize("text", ["0.8,0.1,0.1", "(0.8, 0.1, 0.1)", "[0.8,0.1, 0.1]"])
def test_tuples_parse_item_by_item(text):
  c = config_lib.from_argv(["--config=configs/quickstart.py", f"--config.data.split={text}",
                            "--config.eval.splits=valid,test"])
  assert c.data.split == (0.8, 0.1, 0.1) and all(isinstance(f, float) for f in c.data.split)
  assert c.eval.splits == ("valid", "test")
  with pytest.raises(ValueError, match=r"--config.data.split=0.8,x,0.1: could not convert string "
                                       r"to float: 'x'"):
    config_lib.from_argv(["--config=configs/quickstart.py", "--config.data.split=0.8,x,0.1"])


def test_workdir_flag_is_config_workdir():
  for argv in (["--workdir", "w/a"], ["--workdir=w/a"], ["--config.workdir=w/a"]):
    assert config_lib.from_argv(["--config", "configs/quickstart.py", *argv]).workdir == "w/a"
  with pytest.raises(ValueError, match="--workdir: missing value"):
    config_lib.from_argv(["--config", "configs/quickstart.py", "--workdir"])
