"""The trainer opened (issue 22, problem 8): inn_jax.train.run(config, model=..., corpus=...)
with a typed config and ids in memory; a model kind of one's own registered with
register_model trains, resumes and is evaluated by its is_recurrent; typed model options parse
to their types on the command line."""

import dataclasses
import json
import pathlib
from typing import ClassVar

import pytest
from flax import nnx

from inn_jax import data, typed
from inn_jax.models import INNConfig, MODELS, register_model
from inn_jax.nn import CommunicationConfig, Embedder, MambaConfig
from inn_jax.train import config as config_lib
from inn_jax.train import runner
from tests import tiny as testing


def corpus(folder, seed=0):
  text = testing.write_corpus(pathlib.Path(folder) / f"text{seed}.txt", 4000, seed).read_text()
  vocab = data.CharVocab(sorted(set(text)))
  ids = vocab.encode(text)
  return data.corpus_from_arrays(ids[:3400], ids[3400:3700], ids[3700:], vocab)


def small_config(tmp_path, steps=4):
  c = testing.tiny_config(tmp_path, steps=steps)
  c.mesh.data = 1
  c.train.update(eval_every=steps, save_every=2)
  return c


def test_run_takes_a_typed_model_and_arrays_in_memory(tmp_path):
  model = INNConfig(d_model=16, n_layers=1, n_neurons=2,
                    memory=MambaConfig(expand=None, neuron_params="full", d_state=4,
                                       scan_chunk=8),
                    communication=CommunicationConfig(n_heads=2, dropout=0.0))
  c = small_config(tmp_path)
  results = runner.run(c, model=model, corpus=corpus(tmp_path))
  saved = json.loads((tmp_path / "workdir" / "config.json").read_text())
  assert saved["model"]["d_model"] == 16 and saved["model"]["n_neurons"] == 2
  assert saved["data"]["name"] == "arrays" and results["steps"] == 4
  # Named as the base config with this model, not as the base config alone (issue 33).
  assert results["config"] == saved["name"] == f"{c.name}+model=inn"
  with pytest.raises(ValueError, match="values its flat keys cannot record"):
    runner.run(c, model=model.replace(memory=model.memory.replace(dt_min=0.01)),
               corpus=corpus(tmp_path))
  c2 = small_config(tmp_path / "other")  # The same run resumed with other ids: refused.
  c2.workdir = c.workdir
  with pytest.raises(ValueError, match="corpus"):
    runner.run(c2, model=model, corpus=corpus(tmp_path, seed=1))


@dataclasses.dataclass(frozen=True)
class BigramConfig(typed.Config):
  """A model of one's own: the next token from the current one alone.

  Attributes:
    d_model: the embedding width. dtype: compute dtype.
  """
  d_model: int = 8
  dtype: typed.DType = "float32"


class Bigram(nnx.Module):
  """Args: config (BigramConfig), vocab_size, rngs."""

  is_recurrent: ClassVar[bool] = False

  def __init__(self, config, vocab_size, *, rngs):
    self.config = config
    self.embed = Embedder(vocab_size, config.d_model, tie=False, rngs=rngs)

  def init_cache(self, batch_size, max_len=None):
    return ()

  def __call__(self, tokens_BL, *, cache=None, deterministic=None, rngs=None,
               return_cache=False):
    logits = self.embed.decode(self.embed.encode(tokens_BL))
    return (logits, ()) if return_cache else logits


def test_a_registered_model_kind_trains_and_is_evaluated_by_its_is_recurrent(tmp_path):
  register_model("bigram", BigramConfig)(Bigram)
  try:
    c = small_config(tmp_path, steps=6)
    c.model = ml_model("bigram")
    results = runner.run(c)
    assert results["model"] == "bigram" and set(results["scores"]["valid"]) == {"reset"}
    assert results["valid_bpc"] < 4.0  # log2(9) = 3.17 for uniform: it learned something.
    with pytest.raises(TypeError, match="is_recurrent"):
      register_model("broken", BigramConfig)(type("Broken", (nnx.Module,), {}))
  finally:
    MODELS.pop("bigram", None)


def ml_model(kind):
  from inn_jax.models import model_config
  return model_config(kind, d_model=8)


def test_typed_options_parse_to_their_types_on_the_command_line(tmp_path):
  path = tmp_path / "c.py"
  path.write_text("from inn_jax.train import base_config, paper_model\n"
                  "def get_config(variant=None):\n"
                  "  return base_config('x', paper_model('inn', False), 'pydoc')\n")
  c = config_lib.from_argv(["--config", str(path), "--config.model.dt_rank=8",
                            "--config.model.expand=0.5", "--config.model.attn_dropout=0"])
  assert c.model.dt_rank == 8 and isinstance(c.model.dt_rank, int)
  assert c.model.expand == 0.5 and c.model.attn_dropout == 0.0
  c = config_lib.from_argv(["--config", str(path), "--config.model.dt_rank=auto"])
  assert c.model.dt_rank == "auto"


def test_a_model_option_added_later_at_its_default_is_no_change(tmp_path):
  from inn_jax.train import workdir
  c = testing.tiny_config(tmp_path)
  saved = workdir.flatten(workdir.as_json(c))
  saved.pop("model.remat_rows")  # As a workdir of a version before the option was written.
  assert workdir.changes(saved, c) == {}
  c.model.remat_rows = 2
  assert workdir.changes(saved, c) == {"model.remat_rows": ("<absent>", 2)}
