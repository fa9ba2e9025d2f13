"""Helpers for tests that run train.py: a tiny run's config file, the command, its environment,
and reading back what a run saved."""

import os
import pathlib
import sys

from inn_jax.train import config as config_lib
from inn_jax.train import runner

REPO = pathlib.Path(__file__).resolve().parents[1]

_CONFIG = '''"""A tiny run on a generated text file (written by tests/train_cli.py)."""

from inn_jax.train import testing


def get_config(variant=None):
  c = testing.tiny_config({root!r}, steps={steps})
  c.eval.update(carry_state="no", splits=("valid",))
  return c
'''


def config_file(root, steps: int) -> pathlib.Path:
  """root/tiny_config.py: testing.tiny_config(root) with one fresh-state valid evaluation."""
  path = pathlib.Path(root) / "tiny_config.py"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(_CONFIG.format(root=str(root), steps=steps))
  return path


def argv(path, **overrides) -> list[str]:
  """train.py's arguments: `--config path` and `--config.a.b=value` for each a__b=value."""
  return ["--config", str(path)] + [f"--config.{k.replace('__', '.')}={v}"
                                    for k, v in overrides.items()]


def load(path, **overrides):
  """The config train.py builds from argv(path, **overrides), here in the test process."""
  return config_lib.from_argv(argv(path, **overrides))


def command(path, **overrides) -> list[str]:
  return [sys.executable, str(REPO / "train.py"), *argv(path, **overrides)]


def env(n_devices: int) -> dict:
  """The environment of a train.py subprocess with `n_devices` fake CPU devices."""
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if "xla_force_host_platform_device_count" not in f]
  return {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
          "XLA_FLAGS": " ".join(flags + [f"--xla_force_host_platform_device_count={n_devices}"])}


def restore(config, *, best=False):
  """(state, meta) of config.workdir's newest readable checkpoint, read as the trainer does."""
  config = config.copy_and_resolve_references()
  config.mode = "eval"  # Builds the run, writes nothing.
  r = runner.Run(config)
  try:
    return r.checkpoints.restore(r.abstract_state(), best=best)
  finally:
    r.checkpoints.close()
