"""The experiment configs that ship with the package: `--config <name>[:variant]` or a path.

    python -m inn_jax.train --config quickstart          # this folder's quickstart.py
    python -m inn_jax.train --config text8:inn_paper     # text8.py, variant inn_paper
    python train.py --config configs/text8.py            # the same file through the repository

Each file defines get_config(variant=None) on inn_jax.train.config.base_config; its docstring
says which paper table it reproduces and where it follows the paper's text or its code.
"""
