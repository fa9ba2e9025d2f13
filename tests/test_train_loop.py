"""inn_jax.train.loop (through runner.train): resume equals an uninterrupted run; a NaN loss
stops the run and is never saved."""

import json
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from inn_jax.models import model_config
from inn_jax.ops import scan
from inn_jax.train import loop, memory, optimizer, runner
from tests import tiny as testing


def quick(tmp_path, name, steps=6, **train):
  config = testing.tiny_config(tmp_path, steps=steps)
  config.workdir = str(tmp_path / name)
  config.eval.update(carry_state="no", splits=("valid",))
  config.model.attn_dropout = 0.2  # Dropout on: its masks must resume too.
  config.train.update(**train)
  return config


def saved(workdir, step, item="state"):
  return ocp.StandardCheckpointer().restore(pathlib.Path(workdir).absolute() / "checkpoints"
                                            / str(step) / item)


def train_losses(workdir):
  rows = [json.loads(line) for line in open(pathlib.Path(workdir) / "metrics.jsonl")]
  return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


@pytest.mark.slow
def test_stop_and_resume_equals_uninterrupted(tmp_path):
  whole = quick(tmp_path, "whole", save_every=3)
  runner.train(whole)
  parts = quick(tmp_path, "parts", save_every=3, stop_at=3)
  assert runner.train(parts) == {"stopped_at": 3}
  assert not (pathlib.Path(parts.workdir) / "results.json").exists()
  parts.train.stop_at = 0
  results = runner.train(parts)  # Same command again: resumes at step 3.
  assert results["steps"] == 6 and results["tokens_seen"] == 6 * 8 * 16
  assert results["scan_method"] == scan.auto_method() == runner.scan_method(parts.model)
  a, b = saved(whole.workdir, 6), saved(parts.workdir, 6)
  assert int(a["step"]) == int(b["step"]) == 6
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)  # Bitwise: same batches, same dropout masks.
  assert train_losses(whole.workdir) == train_losses(parts.workdir)


def test_results_name_the_scan_method_used():
  assert runner.scan_method(model_config("inn", scan_method="auto")) == scan.auto_method()
  assert runner.scan_method(model_config("mamba", scan_method="sequential")) == "sequential"
  assert runner.scan_method(model_config("lstm")) is None


def test_nan_loss_stops_without_saving_it(tmp_path):
  config = quick(tmp_path, "nan", steps=8, save_every=1)
  config.optim.update(lr=1e30, clip_norm=0.0, schedule="constant")  # Diverges at step 2.
  with pytest.raises(loop.NonFiniteLossError, match=r"loss became nan .* at step 2") as info:
    runner.train(config)
  assert info.value.__notes__ == [
      "Nothing was saved after it; the newest checkpoint is step 1: to resume from it with, "
      "e.g., a lower optim.lr, add --config.train.allow_changes=true (to resume, run the same "
      "command)."]
  workdir = pathlib.Path(config.workdir)
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [1]
  for leaf in jax.tree.leaves(saved(workdir, 1)):
    assert np.all(np.isfinite(leaf))
  assert not (workdir / "results.json").exists()
  assert max(train_losses(workdir)) == 1  # The NaN step was never logged as a result.


def test_microbatches_accumulate_the_same_update(tmp_path):
  """Dropout off: 2 micro-batches give the full batch's loss and parameters (to rounding)."""
  results = {}
  for k in (1, 2):
    config = quick(tmp_path, f"micro{k}", steps=3, microbatches=k, save_every=3)
    config.model.attn_dropout = 0.0
    runner.train(config)
    results[k] = (saved(config.workdir, 3), train_losses(config.workdir))
  (a, losses_a), (b, losses_b) = results[1], results[2]
  np.testing.assert_allclose(list(losses_a.values()), list(losses_b.values()), rtol=1e-5)
  width = config.model.d_model
  flat_a = jax.tree_util.tree_flatten_with_path(a["params"])[0]
  for (path, x), y in zip(flat_a, jax.tree.leaves(b["params"]), strict=True):
    x, y = np.asarray(x), np.asarray(y)
    if "comm" in jax.tree_util.keystr(path) and "in_proj" in jax.tree_util.keystr(path) \
        and x.ndim == 1:
      # The key bias's gradient is exactly zero (softmax ignores a shift shared by all keys):
      # what the two runs compute for it is rounding, which Adam scales to steps of the rate.
      assert np.abs(x[width:2 * width]).max() <= 3 * config.optim.lr
      x, y = np.delete(x, np.s_[width:2 * width]), np.delete(y, np.s_[width:2 * width])
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def _fitting(config, microbatches, budget):
  r = runner.Run(config)
  lr, _ = optimizer.schedules(config.optim, config.train.steps)
  make = lambda k: loop.make_train_step(r.parts.graphdef, r.parts.rest, r.parts.tx, lr, 1, k)
  shape = (config.data.batch_size, config.data.seq_len)
  return loop.compile_fitting_step(make, r.state, shape, r.mesh, microbatches, budget,
                                   r.compiler_options)


@pytest.mark.slow
def test_automatic_microbatches_take_the_fewest_that_fit(tmp_path):
  config = quick(tmp_path, "auto", steps=1)
  config.data.batch_size = 16  # 4 devices: 1, 2 or 4 micro-batches.
  r = runner.Run(config)
  lr, _ = optimizer.schedules(config.optim, config.train.steps)
  shape = (config.data.batch_size, config.data.seq_len)
  compiled = {}  # Each K's real train step, compiled once for all the limits below.

  def compile_with(k):
    if k not in compiled:
      step = loop.make_train_step(r.parts.graphdef, r.parts.rest, r.parts.tx, lr, 1, k)
      compiled[k] = loop.compile_train_step(step, r.state, shape, r.mesh, r.compiler_options)
    return compiled[k]

  def fit(limit):
    return memory.fit(compile_with, shape, r.mesh.shape["data"], 0, limit,
                      key="train.microbatches", shrink="data.batch_size or data.seq_len")[1]

  need = {k: memory.step_bytes(compile_with(k)) for k in (1, 2, 4)}
  assert need[1] > need[2] > need[4]
  assert _fitting(config, 0, need[1])[1] == 1  # The trainer's own entry point.
  assert fit(need[1] - 1) == 2
  assert fit(need[4]) == 4
  with pytest.raises(memory.StepMemoryError, match=r"with 4 micro-batch\(es\) of 4 x 16.*lower "
                     r"data.batch_size"):
    fit(need[4] - 1)


def test_a_step_that_does_not_fit_fails_before_running(tmp_path, monkeypatch):
  config = quick(tmp_path, "big", steps=2)
  monkeypatch.setattr(runner.Run, "memory_budget", lambda self: 1024.0)
  with pytest.raises(memory.StepMemoryError, match=r"train.microbatches: the step needs .* GiB "
                     r"per device with 1 micro-batch\(es\) of "
                     r"8 x 16, but 0.00 GiB is available; set --config.train.microbatches=0"):
    runner.train(config)
  assert not (pathlib.Path(config.workdir) / "checkpoints").exists() or not any(
      p.name.isdigit() for p in (pathlib.Path(config.workdir) / "checkpoints").iterdir())
