"""Trains or evaluates a model from a config file.

    python train.py --config configs/quickstart.py
    python train.py --config configs/text8.py:inn_paper --config.workdir=workdirs/x
"""

import sys

from inn_jax.train import from_argv, run
from inn_jax.train.checkpoint import CheckpointSaveError
from inn_jax.train.loop import NonFiniteLossError


def main(argv):
  try:
    run(from_argv(argv))
  except (ValueError, FileNotFoundError, NonFiniteLossError, CheckpointSaveError) as e:
    # Their messages name the fix.
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  main(sys.argv[1:])
