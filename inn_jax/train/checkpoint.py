"""Orbax checkpoints in the workdir: the last `keep` in checkpoints/, the best by validation in
best/ (the run's records beside them: inn_jax/train/workdir.py). The training state is
{"params", "opt_state", "step"}; the data position and the dropout key are functions of the step,
so the step restores them too.

On disk the state is plain: every nnx.State as NNX's pure dict (nnx.to_pure_dict), so plain
Orbax + nnx.replace_by_pure_dict read the parameters (inn_jax.load does, restoring "params"
alone). Checkpoints of earlier versions (State with its Variable wrappers) still restore.

Each checkpoint's meta holds the sha256 of its state: Orbax's files carry no checksum, and a
flipped byte in array data would otherwise restore silently.
"""

from __future__ import annotations

import hashlib
import logging
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils

STATE_SHA256 = "state_sha256"  # The meta key of the state's checksum.


class CheckpointSaveError(OSError):
  """A checkpoint could not be written (disk full, no permission); the ones before it are intact."""


class UnreadableCheckpointError(RuntimeError):
  """No checkpoint of a directory could be read."""


def fingerprint(state) -> str:
  """sha256 over the state's dtypes, shapes and bytes: the global arrays, so every process hashes
  the same bytes whether an array is replicated or split over the mesh (per-neuron parameters)."""
  h = hashlib.sha256()
  for x in jax.tree.leaves(state):
    if isinstance(x, jax.Array):
      if x.is_fully_replicated:
        x = x.addressable_data(0)
      elif not x.is_fully_addressable:  # Shards on other processes: gather them.
        x = multihost_utils.process_allgather(x, tiled=True)
    a = np.asarray(x)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def plain(tree):
  """`tree` with every nnx.State as its pure dict and every Variable as its value (containers
  of other kinds, optax's named tuples, kept)."""
  if isinstance(tree, nnx.State):
    return nnx.to_pure_dict(tree)
  if isinstance(tree, nnx.Variable):
    return tree.get_value()
  if isinstance(tree, dict):
    return {k: plain(v) for k, v in tree.items()}
  if isinstance(tree, tuple) and hasattr(tree, "_fields"):
    return type(tree)(*(plain(v) for v in tree))
  if isinstance(tree, (tuple, list)):
    return type(tree)(plain(v) for v in tree)
  return tree


def unplain(like, restored):
  """The inverse of plain: `restored` (plain) in the containers and Variables of `like`."""
  if isinstance(like, nnx.State):
    state = jax.tree.map(lambda x: x, like)  # A copy to fill.
    nnx.replace_by_pure_dict(state, restored)
    return state
  if isinstance(like, nnx.Variable):
    return like.replace(restored)
  if isinstance(like, dict):
    return {k: unplain(v, restored[k]) for k, v in like.items()}
  if isinstance(like, tuple) and hasattr(like, "_fields"):
    return type(like)(*(unplain(a, b) for a, b in zip(like, restored)))
  if isinstance(like, (tuple, list)):
    return type(like)(unplain(a, b) for a, b in zip(like, restored))
  return restored


class Checkpoints:
  """save / restore of the training state, with the checks that make resuming safe."""

  def __init__(self, workdir, *, keep: int = 3, async_save: bool = True):
    self.workdir = pathlib.Path(workdir).absolute()
    # Both managers can save one step at the same time: across processes, Orbax's barriers for
    # it need distinct names.
    opts = lambda n, name: ocp.CheckpointManagerOptions(
        max_to_keep=n, create=True, enable_async_checkpointing=async_save,
        multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name))
    self.last = ocp.CheckpointManager(self.workdir / "checkpoints", options=opts(keep, "last"))
    self.best = ocp.CheckpointManager(self.workdir / "best", options=opts(1, "best"))
    self._saving = {}  # Directory -> the step of its last save, named if that save fails.

  def latest_step(self) -> int | None:
    """The newest step in checkpoints/ (readable or not), None if there is none."""
    return self.last.latest_step()

  def save(self, step: int, state, meta: dict, *, best: bool = False):
    """Asynchronous save; the caller has checked that the state is finite.

    The step is replaced if the directory has it already (saved by a run killed before its
    latest checkpoint was written, or unreadable). A failed write raises CheckpointSaveError,
    for an asynchronous save at the next save() or wait().
    """
    manager = self.best if best else self.last
    self._wait(manager)
    state = plain(state)
    meta = {**meta, STATE_SHA256: fingerprint(state)}
    try:
      if step in manager.all_steps():
        manager.delete(step)
      manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 meta=ocp.args.JsonSave(meta)), force=True)
    except Exception as e:  # Orbax and TensorStore raise many types for a failed write.
      raise self._save_error(manager, step, e) from e
    self._saving[manager.directory] = step

  def _wait(self, manager):
    try:
      manager.wait_until_finished()
    except Exception as e:
      raise self._save_error(manager, self._saving.get(manager.directory), e) from e

  def _save_error(self, manager, step, error) -> CheckpointSaveError:
    try:  # The steps on disk: Orbax's list drops the ones due for removal before they are.
      kept = sorted(int(p.name) for p in manager.directory.iterdir() if p.name.isdigit())
    except OSError:  # An unlistable directory: the steps known before.
      kept = list(manager.all_steps())
    kept = [s for s in kept if s != step]
    return CheckpointSaveError(
        f"could not save checkpoint {step} in {manager.directory} ({type(error).__name__}: "
        f"{error}). The checkpoints saved before it are intact (steps {kept}); free disk space "
        f"or make {self.workdir} writable, then run the same command again to resume.")

  def restore(self, abstract_state, *, best: bool = False):
    """(state, meta) from the newest readable checkpoint, or None if there is none.

    A checkpoint that fails to read (truncated, or its arrays differ from their sha256) is skipped
    with a warning naming it, and the one before it is tried; if none can be read, the last error
    is raised.
    """
    manager = self.best if best else self.last
    error = None
    for step in sorted(manager.all_steps(), reverse=True):
      try:
        state, meta = self._restore(manager, step, abstract_state)
      except Exception as e:  # Orbax raises many types for unreadable files.
        logging.warning("checkpoint %s is unreadable (%s: %s); trying the one before it.",
                        manager.directory / str(step), type(e).__name__, e)
        error = e
        continue
      return state, meta
    if error is not None:
      raise UnreadableCheckpointError(
          f"no checkpoint in {manager.directory} could be read; the newest failed with: {error}. "
          "Restore the workdir from a copy, or use another --config.workdir to start afresh."
      ) from error
    return None

  def _restore(self, manager, step, abstract_state):
    """(state, meta) of one step, checked against its sha256; the plain layout, else (a
    checkpoint of an earlier version) the State layout."""
    def read(target):
      out = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
      meta = dict(out.meta)
      expected = meta.pop(STATE_SHA256, None)  # Absent in checkpoints of older versions.
      if expected is not None and fingerprint(out.state) != expected:
        raise ValueError("its arrays do not match the sha256 saved with them")
      return out.state, meta

    try:
      state, meta = read(plain(abstract_state))
    except ValueError as plain_error:  # Tree mismatch (old layout) or a checksum failure.
      try:
        return read(abstract_state)
      except Exception:
        raise plain_error from None
    return unplain(abstract_state, state), meta

  def best_meta(self) -> dict | None:
    step = self.best.latest_step()
    if step is None:
      return None
    meta = dict(self.best.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta)
    meta.pop(STATE_SHA256, None)
    return meta

  def wait(self):
    """Blocks until the saves started are written; a failed one raises CheckpointSaveError."""
    self._wait(self.last)
    self._wait(self.best)

  def close(self):
    self.last.close()
    self.best.close()
