"""Orbax checkpoints in the workdir: the last `keep` in checkpoints/, the best by validation in
best/, and config.json beside them. The training state is {"params", "opt_state", "step"}; the
data position and the dropout key are functions of the step, so the step restores them too.
"""

from __future__ import annotations

import json
import logging
import pathlib

import jax
import orbax.checkpoint as ocp

CONFIG_FILE = "config.json"
# Sections that fix the shapes or meaning of the saved state: a change here cannot resume.
COMPATIBLE_SECTIONS = ("model", "vocab_size")


def _flatten(tree, prefix=""):
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(_flatten(value, name + "."))
    else:
      out[name] = list(value) if isinstance(value, tuple) else value
  return out


def config_diff(saved: dict, current: dict, sections=COMPATIBLE_SECTIONS) -> list[str]:
  """'key: saved -> now' for every key of `sections` that differs."""
  old = _flatten({s: saved.get(s, "<absent>") for s in sections})
  new = _flatten({s: current.get(s, "<absent>") for s in sections})
  return [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
          for k in sorted(set(old) | set(new)) if old.get(k, "<absent>") != new.get(k, "<absent>")]


class Checkpoints:
  """save / restore of the training state, with the checks that make resuming safe."""

  def __init__(self, workdir, *, keep: int = 3, async_save: bool = True):
    self.workdir = pathlib.Path(workdir).absolute()
    opts = lambda n: ocp.CheckpointManagerOptions(max_to_keep=n, create=True,
                                                  enable_async_checkpointing=async_save)
    self.last = ocp.CheckpointManager(self.workdir / "checkpoints", options=opts(keep))
    self.best = ocp.CheckpointManager(self.workdir / "best", options=opts(1))

  def check_config(self, config_dict: dict, *, write: bool = True):
    """Fails, naming the keys, if the workdir holds checkpoints of an incompatible model;
    then (write=True) writes config.json from process 0."""
    path = self.workdir / CONFIG_FILE
    if path.exists() and self.last.latest_step() is not None:
      diff = config_diff(json.loads(path.read_text()), config_dict)
      if diff:
        raise ValueError(
            f"{self.workdir} holds checkpoints of a different model; differing keys: "
            + "; ".join(diff) + ". Use another --config.workdir, or the saved config.")
    if write and jax.process_index() == 0:
      self.workdir.mkdir(parents=True, exist_ok=True)
      path.write_text(json.dumps(config_dict, indent=2, sort_keys=True, default=str))

  def save(self, step: int, state, meta: dict, *, best: bool = False):
    """Asynchronous save; the caller has checked that the state is finite."""
    manager = self.best if best else self.last
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, abstract_state, *, best: bool = False):
    """(state, meta) from the newest readable checkpoint, or None if there is none.

    A checkpoint that fails to read (truncated, corrupted) is skipped with a warning naming it,
    and the one before it is tried; if none can be read, the last error is raised.
    """
    manager = self.best if best else self.last
    error = None
    for step in sorted(manager.all_steps(), reverse=True):
      try:
        out = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
      except Exception as e:  # Orbax raises many types for unreadable files.
        logging.warning("checkpoint %s is unreadable (%s: %s); trying the one before it.",
                        manager.directory / str(step), type(e).__name__, e)
        error = e
        continue
      return out.state, dict(out.meta)
    if error is not None:
      raise RuntimeError(f"no checkpoint in {manager.directory} could be read; the newest "
                         f"failed with: {error}") from error
    return None

  def best_meta(self) -> dict | None:
    step = self.best.latest_step()
    if step is None:
      return None
    return dict(self.best.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta)

  def wait(self):
    self.last.wait_until_finished()
    self.best.wait_until_finished()

  def close(self):
    self.last.close()
    self.best.close()
