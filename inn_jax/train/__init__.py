"""Training and evaluation: configs, optimiser, mesh, checkpoints, loop, evaluation, logging.

    python train.py --config configs/quickstart.py            # train (resumes), results.json
    python train.py --config configs/text8.py:inn_paper --config.train.steps=1000
    python train.py --config configs/text8.py --config.mode=eval   # best checkpoint
"""

from inn_jax.train.config import base_config, from_argv, load, override, paper_model
from inn_jax.train.runner import Run, evaluate_best, run, train

__all__ = ["Run", "base_config", "evaluate_best", "from_argv", "load", "override", "paper_model",
           "run", "train"]
