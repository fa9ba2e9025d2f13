"""SIGTERM and SIGINT during training: the loop finishes its step, saves and stops (exit 0).

One process: a handler records the signal and the loop asks after each step; the same signal a
second time acts as it would without the handler (Ctrl-C twice: KeyboardInterrupt). Several
processes: JAX's preemption service (started by jax.distributed.initialize) carries a SIGTERM on
any process to all of them and names one step at which every process stops, so that all save the
same step; SIGINT keeps its default there, since the other processes would not hear of it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import jax
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequests:
  """A context manager; `requested(step)` -> the signal's name once the loop must stop after
  `step`, else None. Handlers are installed on entry and the previous ones restored on exit."""

  def __init__(self):
    self.received = None
    self._previous = {}

  def __enter__(self):
    # Signal handlers can only be set from the main thread (a run in another thread keeps the
    # defaults), and with several processes JAX's own SIGTERM handler must stay.
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      for sig in SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def _handle(self, signum, frame):
    name = signal.Signals(signum).name
    if self.received is None:
      self.received = name
      print(f"{name}: finishing the current step, then saving; send it again to stop at once.",
            file=sys.stderr, flush=True)
      return
    # Again: the user insists (a hung step): what the signal did before this run took it.
    previous = self._previous.get(signum) or signal.SIG_DFL  # None: not set from Python.
    signal.signal(signum, previous)
    if callable(previous):
      previous(signum, frame)
    else:
      os.kill(os.getpid(), signum)

  def requested(self, step: int) -> str | None:
    if jax.process_count() > 1 and _reached_sync_point(step):
      return "SIGTERM"
    return self.received


def _reached_sync_point(step: int) -> bool:
  try:
    return multihost_utils.reached_preemption_sync_point(step)
  except RuntimeError:  # jax_enable_preemption_service is off: no preemption notices.
    return False
