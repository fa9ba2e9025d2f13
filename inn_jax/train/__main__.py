"""`python -m inn_jax.train --config quickstart`: inn_jax.train.cli."""

from inn_jax.train.cli import main

main()
