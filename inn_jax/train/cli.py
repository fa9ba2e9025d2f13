"""The trainer's command line: `python -m inn_jax.train`, `inn-train`, or the repository's train.py.

    python -m inn_jax.train --config quickstart                 # a config shipped in the package
    python -m inn_jax.train --config text8:inn_paper --workdir workdirs/x
    python train.py --config configs/text8.py                   # the same, by path

Errors of the user's making (a config, the data, the disk, the memory, a diverging loss) print
one line and exit 2; any other exception is a bug and prints its traceback. Both name the step
saved and the command to resume when they happen after training began. SIGTERM and SIGINT stop
training after the current step, save, and exit 0.
"""

from __future__ import annotations

import shlex
import sys

from inn_jax.train.checkpoint import UnreadableCheckpointError
from inn_jax.train.config import from_argv
from inn_jax.train.loop import NonFiniteLossError
from inn_jax.train.memory import StepMemoryError
from inn_jax.train.runner import run

# OSError: missing files, a full or read-only disk (CheckpointSaveError); ValueError: configs and
# data (ConfigError and the data layer's checks).
USER_ERRORS = (ValueError, OSError, NonFiniteLossError, StepMemoryError,
               UnreadableCheckpointError)


def one_line(error: BaseException) -> str:
  """The error's message and its notes as sentences of one line."""
  parts = [" ".join(p.split()) for p in (str(error), *getattr(error, "__notes__", []))]
  return " ".join(p if p.endswith((".", ")")) else p + "." for p in parts if p)


def main(argv=None, prog: str | None = None):
  argv = sys.argv[1:] if argv is None else list(argv)
  if prog is None:
    prog = ("train.py" if sys.argv[0].endswith("train.py") else
            "inn-train" if sys.argv[0].endswith("inn-train") else "-m inn_jax.train")
  command = shlex.join(["python", *prog.split(), *argv]) if not prog.startswith("inn-") else \
      shlex.join([prog, *argv])
  try:
    return run(from_argv(argv), command=command)
  except USER_ERRORS as e:
    print(f"error: {one_line(e)}", file=sys.stderr)
    sys.exit(2)
