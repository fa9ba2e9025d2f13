"""Trains or evaluates a model from a config file: a thin alias of `python -m inn_jax.train`.

    python train.py --config configs/quickstart.py
    python train.py --config configs/text8.py:inn_paper --workdir workdirs/x

See inn_jax/train/cli.py (errors of the user's making: one line, exit 2).
"""

import sys

from inn_jax.train import cli
from inn_jax.train.cli import USER_ERRORS, one_line  # noqa: F401 (names tests use)


def main(argv=None):
  return cli.main(argv, prog="train.py")


if __name__ == "__main__":
  main(sys.argv[1:])
