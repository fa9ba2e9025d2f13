"""Trains or evaluates a model from a config file: a thin alias of `python -m inn_jax.train`.

    python train.py --config configs/quickstart.py
    python train.py --config configs/text8.py:inn_paper --workdir workdirs/x

See inn_jax/train/cli.py (errors of the user's making: one line, exit 2).
"""

import sys

from inn_jax.train import host

if __name__ == "__main__":
  host.start_with_huge_pages()  # Before JAX is imported: glibc reads its tunables at start.

from inn_jax.train import cli  # noqa: E402 (after the restart above)
from inn_jax.train.cli import USER_ERRORS, one_line  # noqa: E402,F401 (names tests use)


def main(argv=None):
  return cli.main(argv, prog="train.py")


if __name__ == "__main__":
  main(sys.argv[1:])
