"""Training and evaluation: configs, optimiser, mesh, checkpoints, loop, evaluation, logging.

    python -m inn_jax.train --config quickstart               # train (resumes), results.json
    python train.py --config configs/text8.py:inn_paper --config.train.steps=1000
    python train.py --config configs/text8.py --config.mode=eval   # best checkpoint

From Python: `run(load("quickstart"), model=INNConfig(...), corpus=data.corpus_from_arrays(...))`.
"""

import importlib

# The names below, imported on first use (PEP 562): `inn_jax.train.host` must run before JAX is
# imported (it may restart the process), and importing this package must not import JAX for it.
_EXPORTS = {"base_config": "config", "from_argv": "config", "load": "config",
            "override": "config", "paper_model": "config", "Run": "runner",
            "evaluate_best": "runner", "run": "runner", "train": "runner"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(f"inn_jax.train.{_EXPORTS[name]}"), name)
  raise AttributeError(f"module 'inn_jax.train' has no attribute {name!r}")


def __dir__():
  return sorted({*globals(), *_EXPORTS})
