"""Trains or evaluates a model from a config file.

    python train.py --config configs/quickstart.py
    python train.py --config configs/text8.py:inn_paper --workdir workdirs/x

Errors of the user's making (a config, the data, the disk, the memory, a diverging loss) print
one line and exit 2; any other exception is a bug and prints its traceback. Both name the step
saved and the command to resume when they happen after training began. SIGTERM and SIGINT stop
training after the current step, save, and exit 0.
"""

import shlex
import sys

from inn_jax.train import from_argv, run
from inn_jax.train.checkpoint import UnreadableCheckpointError
from inn_jax.train.loop import NonFiniteLossError
from inn_jax.train.memory import StepMemoryError

# OSError: missing files, a full or read-only disk (CheckpointSaveError); ValueError: configs and
# data (ConfigError and the data layer's checks).
USER_ERRORS = (ValueError, OSError, NonFiniteLossError, StepMemoryError,
               UnreadableCheckpointError)


def one_line(error: BaseException) -> str:
  """The error's message and its notes as sentences of one line."""
  parts = [" ".join(p.split()) for p in (str(error), *getattr(error, "__notes__", []))]
  return " ".join(p if p.endswith((".", ")")) else p + "." for p in parts if p)


def main(argv):
  script = sys.argv[0] if sys.argv[0].endswith("train.py") else "train.py"
  command = shlex.join(["python", script, *argv])
  try:
    run(from_argv(argv), command=command)
  except USER_ERRORS as e:
    print(f"error: {one_line(e)}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main(sys.argv[1:])
