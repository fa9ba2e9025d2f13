"""inn_jax.train.checkpoint: eval mode reads the best checkpoint, a checkpoint of another model is
refused with the differing keys, an unreadable latest checkpoint falls back to the one before."""

import json
import logging
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from inn_jax.train import checkpoint, runner
from tests import tiny as testing


def test_eval_mode_and_incompatible_restore(tmp_path):
  config = testing.tiny_config(tmp_path, steps=2)
  config.eval.update(carry_state="no", splits=("valid",))
  trained = runner.train(config)
  config.mode = "eval"
  evaluated = runner.run(config)
  assert evaluated["scores"] == trained["scores"]
  assert evaluated["steps"] == 2 and (pathlib.Path(config.workdir) / "eval_results.json").exists()
  config.model.d_model = 24
  config.model.neuron_identity = "embedding"
  config.eval.splits = ("test",)  # Evaluation settings may change in eval mode.
  with pytest.raises(ValueError, match=r"holds checkpoints of a different model: model.d_model: "
                                       r"16 -> 24; model.neuron_identity: 'none' -> 'embedding'\. "
                                       r"Evaluate with the run's config"):
    runner.Run(config)
  config.mode = "train"
  with pytest.raises(ValueError, match=r"holds a run whose config differs: eval.splits: "
                                       r"\['valid'\] -> \['test'\]; model.d_model: 16 -> 24; "):
    runner.Run(config)
  saved = json.loads((pathlib.Path(config.workdir) / "config.json").read_text())
  assert saved["model"]["d_model"] == 16  # The refused run did not overwrite it.


def test_eval_mode_without_checkpoint_fails(tmp_path):
  config = testing.tiny_config(tmp_path)
  config.mode = "eval"
  with pytest.raises(FileNotFoundError, match="no checkpoint in"):
    runner.run(config)


def test_unreadable_latest_falls_back_with_a_warning(tmp_path, caplog):
  ckpt = checkpoint.Checkpoints(tmp_path / "w", keep=3, async_save=False)
  state = {"w": jnp.arange(6.0).reshape(2, 3), "step": jnp.asarray(1)}
  ckpt.save(1, state, {"step": 1})
  ckpt.save(2, {"w": state["w"] + 10, "step": jnp.asarray(2)}, {"step": 2})
  ckpt.wait()
  for f in (tmp_path / "w" / "checkpoints" / "2" / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(b"")  # Truncated, as by a crash mid-write.
  with caplog.at_level(logging.WARNING):
    restored, meta = ckpt.restore(state)
  assert meta == {"step": 1}
  np.testing.assert_array_equal(restored["w"], state["w"])
  assert any("checkpoints/2 is unreadable" in r.getMessage() for r in caplog.records)
  for f in (tmp_path / "w" / "checkpoints" / "1" / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(b"")
  with pytest.raises(checkpoint.UnreadableCheckpointError, match="no checkpoint in .* could be "
                     "read; the newest failed with: .*Restore the workdir from a copy"):
    ckpt.restore(state)
