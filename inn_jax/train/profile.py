"""Profiler traces of chosen train steps: `train.profile_steps="START:END"` traces steps START to
END - 1 (a Python slice; "20" alone is step 20) into <workdir>/profile.

The trace is jax.profiler's (an XSpace, plugins/profile/<time>/<host>.xplane.pb, with the
compiled step's HLO and its op names): view it with TensorBoard's profile plugin or XProf. The
step holds named scopes in the paper's words: embed, layer_k/memory, layer_k/communication, head
(inn_jax/models/inn.py), loss, grads, optimizer and finite_check (inn_jax/train/loop.py).
"""

from __future__ import annotations

import pathlib

import jax

KEY = "train.profile_steps"
SUBDIR = "profile"


def parse_steps(text: str, total_steps: int | None = None) -> range | None:
  """"START:END" -> range(START, END); "N" -> range(N, N + 1); "" -> None (no trace).

  Raises ValueError naming the key, the value and the fix (steps count from 1; END <= total + 1).
  """
  text = str(text).strip()
  if not text:
    return None
  start, colon, end = text.partition(":")
  fix = ("use START:END, the steps START to END - 1 counted from 1 (e.g. '20:25' traces steps "
         "20 to 24), or '' for none")
  try:
    steps = range(int(start), int(end) if colon else int(start) + 1)
  except ValueError:
    raise ValueError(f"config.{KEY}: {text!r} is not a step range; {fix}.") from None
  if steps.start < 1 or not steps:
    raise ValueError(f"config.{KEY}: {text!r} holds no step; {fix}.")
  if total_steps is not None and steps.stop - 1 > total_steps:
    raise ValueError(f"config.{KEY}: {text!r} goes past the last step (train.steps="
                     f"{total_steps}); trace steps within 1..{total_steps}.")
  return steps


class StepProfiler:
  """`step(s, run, pending)` returns run() (the train step s); inside the window it is traced.

  Before the window's first step it waits for `pending` (the state the step reads), so that no
  earlier step runs inside the trace; after the last it waits for the step's outputs before
  stopping, so that the trace holds the steps whole. Each step is marked with a
  StepTraceAnnotation (XProf's step view). A run resumed inside the window traces the rest.
  """

  def __init__(self, workdir, spec: str = "", *, total_steps: int | None = None, report=print):
    self.steps = parse_steps(spec, total_steps)
    self.dir = pathlib.Path(workdir) / SUBDIR
    self.report, self.active, self.traced = report, False, []

  def step(self, s: int, run, pending=None):
    if self.steps is None or s not in self.steps:
      return run()
    if not self.active:
      jax.block_until_ready(pending)
      self.dir.mkdir(parents=True, exist_ok=True)
      jax.profiler.start_trace(str(self.dir))
      self.active = True
    with jax.profiler.StepTraceAnnotation("train", step_num=s):
      out = run()
    self.traced.append(s)
    if s == self.steps[-1]:
      jax.block_until_ready(out)
      self.close()
    return out

  def close(self):
    """Stops a trace under way (the window's end, or a run that stopped or failed in it)."""
    if not self.active:
      return
    jax.profiler.stop_trace()
    self.active = False
    first, last = self.traced[0], self.traced[-1]
    self.report(f"profiled steps {first}-{last} into {self.dir}: view with `tensorboard "
                f"--logdir {self.dir}` (pip install tensorboard-plugin-profile) or `xprof "
                f"--logdir {self.dir}` (pip install xprof)")


def trace_files(workdir) -> list[pathlib.Path]:
  """The .xplane.pb files under <workdir>/profile, oldest first."""
  return sorted((pathlib.Path(workdir) / SUBDIR).glob("plugins/profile/*/*.xplane.pb"))
