"""Reliability under faults (issues 7 and 12), each on the real trainer: a run killed with SIGKILL
and restarted, one stopped by SIGTERM and then SIGINT (saved, exit 0) and resumed, and one whose
validation raised (saved at the last good step, one line or the bug's traceback) and resumed all
end bitwise equal to an uninterrupted run; a damaged latest checkpoint is skipped with a warning
naming it; a failed save is a clear error that leaves the earlier checkpoints intact; an injected
NaN stops the run and is never saved; bad input fails with one line naming the fix, before
anything is compiled.

Also covered elsewhere: resuming only the same run, the saved micro-batch count
(tests/test_train_resume.py), stop_at and resume (tests/test_train_loop.py), a diverging loss
(test_train_loop.py), empty checkpoint files (test_train_checkpoint.py), each config check's
problem text (test_train_validate.py).
"""

import contextlib
import hashlib
import json
import logging
import os
import pathlib
import random
import re
import resource
import shlex
import shutil
import signal
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import train
from inn_jax import data
from inn_jax.train import checkpoint, loop, optimizer, runner
from tests import train_cli

NOBODY = 65534  # The uid that a root test process takes on to meet file permissions.


def file_hashes(workdir) -> dict:
  root = pathlib.Path(workdir)
  return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
          for sub in ("checkpoints", "best") for f in sorted((root / sub).rglob("*"))
          if f.is_file() and f.relative_to(root / sub).parts[0].isdigit()}


def train_losses(workdir) -> dict:
  """step -> the losses logged for it."""
  out = {}
  for line in open(pathlib.Path(workdir) / "metrics.jsonl"):
    row = json.loads(line)
    if row["split"] == "train":
      out.setdefault(row["step"], []).append(row["loss"])
  return out


# --- SIGKILL at a random step, restart -------------------------------------------------------


def _run_until_signalled(cmd, env, workdir, after: int, log, sig=signal.SIGKILL) -> int:
  """Starts cmd and sends it `sig` once step `after` is logged (and, for SIGKILL, a checkpoint
  is committed); returns the last step logged before the signal, once the process ended as the
  signal should end it."""
  metrics = pathlib.Path(workdir) / "metrics.jsonl"
  proc = subprocess.Popen(cmd, env=env, cwd=train_cli.REPO, stdout=log, stderr=subprocess.STDOUT)
  deadline = time.time() + 300
  try:
    while time.time() < deadline and proc.poll() is None:
      text = metrics.read_text() if metrics.exists() else ""
      lines = text[:text.rfind("\n") + 1].splitlines()  # Complete lines only.
      last = json.loads(lines[-1])["step"] if lines else 0
      if last >= after and (sig != signal.SIGKILL or train_cli.step_dirs(workdir)):
        proc.send_signal(sig)
        break
      time.sleep(0.005)
  finally:
    rc = proc.wait(timeout=60) if proc.poll() is None else proc.returncode
  want = -signal.SIGKILL if sig == signal.SIGKILL else 0  # SIGTERM, SIGINT: saved, exit 0.
  assert rc == want, f"the run ended ({rc}) after {sig!r} at step {after}; see {log.name}"
  return last


def _uninterrupted_and_other(tmp_path, steps: int, keys: dict, name: str):
  """(config, config, command, environment): an uninterrupted train.py run of `steps` steps on
  one device in tmp_path/whole, and the same run in tmp_path/name, to interrupt."""
  path, env = train_cli.config_file(tmp_path, steps), train_cli.env(1)
  whole = train_cli.load(path, workdir=tmp_path / "whole", **keys)
  subprocess.run(train_cli.command(path, workdir=whole.workdir, **keys), env=env, check=True,
                 cwd=train_cli.REPO, capture_output=True, timeout=600)
  other = train_cli.load(path, workdir=tmp_path / name, **keys)
  return whole, other, train_cli.command(path, workdir=other.workdir, **keys), env


@pytest.mark.slow
def test_sigkill_at_random_steps_then_restart_is_bitwise_uninterrupted(tmp_path):
  keys = dict(train__save_every=10, train__eval_every=20, train__eval_windows=2, train__keep=2,
              train__async_save="true", model__attn_dropout=0.2)  # Dropout masks must resume.
  whole, killed, cmd, env = _uninterrupted_and_other(tmp_path, 160, keys, "killed")
  seed = random.randrange(2**32)
  rng = random.Random(seed)
  with open(tmp_path / "killed.log", "w") as log:
    first = _run_until_signalled(cmd, env, killed.workdir, rng.randrange(11, 80), log)
    resumed = train_cli.step_dirs(killed.workdir)[-1]
    second = _run_until_signalled(cmd, env, killed.workdir, rng.randrange(first + 1, 140), log)
    subprocess.run(cmd, env=env, cwd=train_cli.REPO, stdout=log, stderr=subprocess.STDOUT,
                   check=True, timeout=600)
  text = (tmp_path / "killed.log").read_text()
  context = f"seed {seed}: killed after steps {first} and {second}"
  assert text.count("resumed from step") == 2, context
  assert f"resumed from step {resumed} " in text, context
  train_cli.assert_same_run(whole, killed, context)
  print(context)  # In the junit report of benchmarks/reliability.sh.


# --- SIGTERM and SIGINT: finish the step, save, exit 0 -----------------------------------------


@pytest.mark.slow
def test_sigterm_then_sigint_save_exit_0_and_the_resumed_run_is_uninterrupted(tmp_path):
  steps = 160
  keys = dict(train__save_every=50, train__eval_every=20, train__eval_windows=2, train__keep=2,
              train__async_save="true", model__attn_dropout=0.2)
  whole, stopped, cmd, env = _uninterrupted_and_other(tmp_path, steps, keys, "stopped")
  seed = random.randrange(2**32)
  rng, stops, log_path = random.Random(seed), [], tmp_path / "stopped.log"
  with open(log_path, "w") as log:
    for sig, low, high in ((signal.SIGTERM, 11, 70), (signal.SIGINT, 80, 140)):
      after = _run_until_signalled(cmd, env, stopped.workdir, rng.randrange(low, high), log, sig)
      log.flush()
      found = re.findall(rf"stopped at step (\d+) \((\w+); {steps} steps in all\); run the "
                         r"same command to resume\.", log_path.read_text())
      context = f"seed {seed}: {sig.name} after step {after}"
      assert len(found) == len(stops) + 1 and found[-1][1] == sig.name, context
      stops.append(int(found[-1][0]))
      # Saved at the step where it stopped.
      assert stops[-1] >= after and train_cli.step_dirs(stopped.workdir)[-1] == stops[-1]
    subprocess.run(cmd, env=env, cwd=train_cli.REPO, stdout=log, stderr=subprocess.STDOUT,
                   check=True, timeout=600)
  context = f"seed {seed}: stopped at steps {stops[0]} (SIGTERM) and {stops[1]} (SIGINT)"
  text = log_path.read_text()
  assert [int(k) for k in re.findall(r"resumed from step (\d+) ", text)] == stops, context
  assert "Traceback" not in text, context
  train_cli.assert_same_run(whole, stopped, context)
  print(context)  # In the junit report of benchmarks/reliability.sh.


# --- An exception inside validation --------------------------------------------------------------

# Validation at steps 2, 4, 6, saves at 3 and 6: a failure at step 4's validation finds no
# checkpoint of step 4 and must save one.
VALIDATING = dict(train__save_every=3, train__eval_every=2, train__eval_windows=2, train__keep=5,
                  model__attn_dropout=0.2, mesh__data=1)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  root = tmp_path_factory.mktemp("uninterrupted")
  config = train_cli.load(train_cli.config_file(root, 6), **VALIDATING)
  runner.train(config)
  return config


def _failing_on_call(n: int, error: Exception):
  """data.eval_batches that raises `error` on its n-th call (a fault reading the split)."""
  real, calls = data.eval_batches, []

  def eval_batches(*args, **kwargs):
    calls.append(n)
    if len(calls) == n:
      raise error
    return real(*args, **kwargs)
  return eval_batches


@pytest.mark.parametrize("error", [OSError(5, "Input/output error"), RuntimeError("a bug")],
                         ids=["user_error", "bug"])
def test_exception_in_validation_saves_and_the_resumed_run_is_uninterrupted(
    tmp_path, monkeypatch, capsys, uninterrupted, error):
  path = train_cli.config_file(tmp_path, 6)
  argv = train_cli.argv(path, **VALIDATING)
  config = train_cli.load(path, **VALIDATING)
  workdir = pathlib.Path(config.workdir).absolute()
  monkeypatch.setattr(data, "eval_batches", _failing_on_call(2, error))  # Step 4's validation.
  note = (f"It happened in the validation at step 4; saved step 4 in {workdir}; to resume, run "
          f"the same command: python train.py {shlex.join(argv)}.")
  if isinstance(error, OSError):  # The user's (the disk's) error: one line, exit 2.
    assert train_cli.exits_with_one_line(train.main, argv, capsys) == (
        f"error: [Errno 5] Input/output error. {note}")
  else:  # A bug: its traceback, with the note.
    with pytest.raises(RuntimeError, match="a bug") as info:
      train.main(argv)
    assert info.value.__notes__ == [note]
  assert train_cli.step_dirs(workdir) == [3, 4] and train_cli.step_dirs(workdir, "best") == [2]
  assert not (workdir / "results.json").exists()
  monkeypatch.setattr(data, "eval_batches", _failing_on_call(0, error))  # Never fails.
  capsys.readouterr()
  train.main(argv)  # The same command: validates step 4 first, then trains on.
  assert "resumed from step 4 " in capsys.readouterr().out
  train_cli.assert_same_run(uninterrupted, config)


# --- A damaged latest checkpoint -------------------------------------------------------------


@pytest.fixture(scope="module")
def six_steps(tmp_path_factory):
  """A finished 6-step run with checkpoints and best at steps 3 and 6, and its final state."""
  root = tmp_path_factory.mktemp("six")
  config = train_cli.load(train_cli.config_file(root, 6), train__save_every=3,
                          train__eval_every=3, mesh__data=1)
  runner.train(config)
  assert train_cli.step_dirs(config.workdir) == [3, 6]
  assert train_cli.step_dirs(config.workdir, "best") == [6]
  return config, train_cli.restore(config)[0]


def _truncate(step_dir, state):
  """A crash mid-write on a filesystem without atomic renames: every state file cut short."""
  del state
  for f in (step_dir / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(f.read_bytes()[:f.stat().st_size // 2])


def _flip(step_dir, state):
  """Silent corruption (a bad disk or copy): valid files whose array data differs in one bit
  from what the run saved; Orbax's files carry no checksum of their own."""
  leaves, treedef = jax.tree.flatten(checkpoint.plain(jax.device_get(state)))  # As saved.
  i = max(range(len(leaves)), key=lambda i: leaves[i].size)
  leaves[i] = np.array(leaves[i])
  leaves[i].view(np.uint32).flat[leaves[i].size // 2] ^= 1 << 20
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(step_dir / "state", jax.tree.unflatten(treedef, leaves), force=True)
  checkpointer.wait_until_finished()


@pytest.mark.parametrize("damage, reason", [(_truncate, ""), (_flip, "do not match the sha256")],
                         ids=["truncated", "bit_flip"])
def test_damaged_latest_checkpoint_is_skipped_and_the_run_completes(
    six_steps, tmp_path, caplog, capsys, damage, reason):
  reference, final = six_steps
  config = reference.copy_and_resolve_references()
  config.workdir = str(tmp_path / "workdir")
  shutil.copytree(reference.workdir, config.workdir)
  (tmp_path / "workdir" / "results.json").unlink()
  damage(tmp_path / "workdir" / "checkpoints" / "6", final)
  with caplog.at_level(logging.WARNING):
    results = runner.train(config)  # The same command again.
  warnings = [r.getMessage() for r in caplog.records if "is unreadable" in r.getMessage()]
  assert len(warnings) == 1 and f"{config.workdir}/checkpoints/6 is unreadable" in warnings[0]
  assert reason in warnings[0]
  assert "resumed from step 3" in capsys.readouterr().out
  # Steps 4-6 again, saved over the damaged step 6 (and best/6): the uninterrupted result.
  assert results["steps"] == 6 and train_cli.step_dirs(config.workdir) == [3, 6]
  state, meta = train_cli.restore(config)
  assert meta["step"] == 6
  train_cli.assert_bitwise_equal(state, final)


# --- A failing save ----------------------------------------------------------------------------


@contextlib.contextmanager
def _no_space(workdir):
  """Writes past half a checkpoint's largest file fail (EFBIG), as on a full disk."""
  largest = max(f.stat().st_size for f in (workdir / "checkpoints").rglob("*") if f.is_file())
  soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
  handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # Else the kernel kills the process.
  resource.setrlimit(resource.RLIMIT_FSIZE, (largest // 2, hard))
  try:
    yield "File too large"
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, handler)


@contextlib.contextmanager
def _no_permission(workdir):
  """checkpoints/ and best/ read-only; root, which ignores modes, acts as nobody meanwhile (and
  may pass through the workdir's parents, pytest's own being private)."""
  modes = {d: d.stat().st_mode & 0o7777 for d in (workdir / "checkpoints", workdir / "best",
                                                   *workdir.parents)}
  for d, mode in modes.items():
    d.chmod(0o555 if d.name in ("checkpoints", "best") else mode | 0o011)
  root = os.geteuid() == 0
  if root:
    os.seteuid(NOBODY)
  try:
    yield "Permission denied: '" + str(workdir / "checkpoints")
  finally:
    if root:
      os.seteuid(0)
    for d, mode in modes.items():
      d.chmod(mode)


@pytest.mark.parametrize("fault, async_save", [(_no_space, "true"), (_no_permission, "false")],
                         ids=["no_space-async", "no_permission-sync"])
def test_failing_save_is_a_clear_error_and_keeps_earlier_checkpoints(
    tmp_path, monkeypatch, capsys, fault, async_save):
  path = train_cli.config_file(tmp_path, 5)
  argv = train_cli.argv(path, train__save_every=1, train__keep=2, train__async_save=async_save,
                        mesh__data=1)
  config = train_cli.load(path, mesh__data=1)
  workdir = pathlib.Path(config.workdir)
  real_save, before, errno_text = ocp.CheckpointManager.save, {}, []

  with contextlib.ExitStack() as faults:
    def save(manager, step, *args, **kwargs):
      if step >= 3 and not before:  # From step 3 on, the disk is full / read-only.
        before.update(file_hashes(workdir))
        errno_text.append(faults.enter_context(fault(workdir)))
      return real_save(manager, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    message = train_cli.exits_with_one_line(train.main, argv, capsys)
  assert message.startswith(f"error: could not save checkpoint 3 in {workdir}/checkpoints (")
  assert errno_text[0] in message
  assert message.endswith(
      "The checkpoints saved before it are intact (steps [1, 2]); free disk space or make "
      f"{workdir} writable, then run the same command again to resume.")

  assert train_cli.step_dirs(workdir) == [1, 2] and {k.split("/")[1] for k in before} == {"1", "2"}
  assert file_hashes(workdir) == before  # Not a byte changed.
  state, meta = train_cli.restore(config)
  assert meta["step"] == int(state["step"]) == 2
  monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)
  train.main(argv)  # Space freed: the same command resumes from step 2 and completes.
  assert train_cli.restore(config)[1]["step"] == 5 and (workdir / "results.json").exists()


# --- An injected NaN -------------------------------------------------------------------------


def _nan_update_at(step: int) -> optax.GradientTransformation:
  """Multiplies the update of `step` (1-based) by NaN: loss and gradient stay finite."""
  def update(updates, count, params=None):
    scale = jnp.where(count == step - 1, jnp.nan, 1.0)
    return jax.tree.map(lambda u: u * scale, updates), count + 1

  return optax.GradientTransformation(lambda _: jnp.zeros((), jnp.int32), update)


def test_injected_nan_stops_the_run_and_is_never_saved(tmp_path, monkeypatch):
  config = train_cli.load(train_cli.config_file(tmp_path, 6), train__save_every=1,
                          train__eval_every=1, train__async_save="true", mesh__data=1)
  make = optimizer.make_optimizer
  monkeypatch.setattr(optimizer, "make_optimizer",
                      lambda *a, **k: optax.chain(make(*a, **k), _nan_update_at(3)))
  with pytest.raises(loop.NonFiniteLossError,
                     match=r"the update of step 3 made the parameters or optimiser state "
                           r"non-finite \(loss \d\.\d+, gradient norm \d\.\d+\); stopped"):
    runner.train(config)
  workdir = pathlib.Path(config.workdir)
  assert train_cli.step_dirs(workdir) == [1, 2] and train_cli.step_dirs(workdir, "best")[0] <= 2
  for sub in ("checkpoints", "best"):
    for step in train_cli.step_dirs(workdir, sub):
      saved = ocp.StandardCheckpointer().restore(workdir / sub / str(step) / "state")
      assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(saved)), (sub, step)
  assert max(train_losses(workdir)) == 2  # Step 3 never logged as a result.
  assert not (workdir / "results.json").exists()


# --- Bad input: one line, before any compilation -----------------------------------------------


@pytest.mark.parametrize("overrides, problem, fix", [
    ({"model.n_heads": 3}, "3 heads do not divide the width d_model=16",
     "pick n_heads among [1, 2, 4, 8, 16]"),
    ({"data.batch_size": 6}, "6 is not divisible by the data-parallel size 4",
     "use a multiple of 4"),
    ({"mesh.neuron": 2, "model.n_neurons": 3},
     "the neuron axis size 2 does not divide model.n_neurons=3", "pick a divisor of it"),
    ({"data.name": "text9"}, "unknown dataset 'text9'", "choose one of ["),
    ({"model.kind": "gru"}, "unknown model 'gru'", "choose one of ["),
    ({"model.d_state": 0}, "config.model.d_state: must be positive, got 0", ""),
    ({"data.eval_batch_size": -8}, "config.data.eval_batch_size: must be positive, got -8", ""),
    ({"data.seq_len": 400}, "400 is longer than the valid split",
     "use at most 299 or a bigger corpus"),
    ({"eval.microbatches": 3}, "3 micro-batches x data-parallel size 4 do not divide "
     "data.eval_batch_size=8", "use a batch size that is a multiple of 12"),
    ({"model.attn_dropout": 1.5}, "1.5 is not a dropout rate in [0, 1)", "or 0 for none"),
    ({"model.attn_dropout": -0.5}, "-0.5 is not a dropout rate in [0, 1)", "or 0 for none"),
    ({"model.dtype": "foo"}, "'foo' is not a supported compute dtype",
     "choose one of ('float32', 'bfloat16', 'float16')"),
    ({"data.split": "0.8,0.1"}, "data.split=(0.8, 0.1) must be three positive fractions",
     "summing to 1"),
], ids=["heads", "batch", "neurons", "dataset", "model", "size", "negative_size", "length",
        "eval_microbatches", "dropout_high", "dropout_negative", "dtype", "split"])
def test_bad_input_exits_with_the_fix_before_any_compilation(tmp_path, capsys, overrides,
                                                            problem, fix):
  argv = train_cli.argv(train_cli.config_file(tmp_path, 4),
                        **{k.replace(".", "__"): v for k, v in overrides.items()})
  message, compiled = train_cli.without_compiling(
      lambda: train_cli.exits_with_one_line(train.main, argv, capsys))
  key = next(iter(overrides))
  assert message.startswith(f"error: config.{key}" if key != "data.split" else "error: data.split")
  assert problem in message and fix in message
  assert not compiled


