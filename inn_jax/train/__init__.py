"""Training and evaluation: configs, optimiser, mesh, checkpoints, loop, evaluation, logging.

    python -m inn_jax.train --config quickstart               # train (resumes), results.json
    python train.py --config configs/text8.py:inn_paper --config.train.steps=1000
    python train.py --config configs/text8.py --config.mode=eval   # best checkpoint

From Python: `run(load("quickstart"), model=INNConfig(...), corpus=data.corpus_from_arrays(...))`.
"""

from inn_jax.train.config import base_config, from_argv, load, override, paper_model
from inn_jax.train.runner import Run, evaluate_best, run, train

__all__ = ["Run", "base_config", "evaluate_best", "from_argv", "load", "override", "paper_model",
           "run", "train"]
