"""Helpers for tests that run train.py: a tiny run's config file, the command, its environment,
reading back what a run saved, and what a user error and a compilation look like."""

import json
import os
import pathlib
import sys

import jax
import numpy as np
import pytest

from inn_jax.train import config as config_lib
from inn_jax.train import runner

REPO = pathlib.Path(__file__).resolve().parents[1]

_CONFIG = '''"""A tiny run on a generated text file (written by tests/train_cli.py)."""

from tests import tiny as testing


def get_config(variant=None):
  c = testing.tiny_config({root!r}, steps={steps})
  c.eval.update(carry_state="no", splits=("valid",))
  c.mesh.data = {mesh_data}
  return c
'''


def config_file(root, steps: int, mesh_data: int = -1) -> pathlib.Path:
  """root/tiny_config.py: testing.tiny_config(root) with one fresh-state valid evaluation, on
  mesh.data devices (-1: all; 1 compiles fastest)."""
  path = pathlib.Path(root) / "tiny_config.py"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(_CONFIG.format(root=str(root), steps=steps, mesh_data=mesh_data))
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


def without_compiling(fn):
  """(fn(), the names of the compilation events while it ran); a compilation afterwards shows
  that the listener sees them."""
  events = []
  listener = lambda event, duration, **_: events.append(event)
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    out = fn()
    compiled = [e for e in events if e.startswith("/jax/core/compile")]
    jax.jit(lambda x: x * 3 + len(events))(1.0)  # The listener sees compilations.
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert "/jax/core/compile/backend_compile_duration" in events
  return out, compiled


def exits_with_one_line(main, argv, capsys) -> str:
  """main(argv)'s message: one line on stderr and exit status 2, as a user error."""
  capsys.readouterr()
  with pytest.raises(SystemExit) as exit_info:
    main(argv)
  err = capsys.readouterr().err
  assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1, err
  return err.strip()


def assert_bitwise_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    assert np.asarray(x).dtype == np.asarray(y).dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def step_dirs(workdir, sub="checkpoints") -> list[int]:
  """The committed steps on disk (Orbax writes each into a temporary name, then renames it)."""
  path = pathlib.Path(workdir) / sub
  return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit()) if path.exists() else []


def assert_same_run(whole, resumed, context=""):
  """Bitwise equal final and best states, equal results, and metrics.jsonl with each step once
  (a resumed run drops the rows past its checkpoint) holding the same numbers."""
  (a, meta_a), (b, meta_b) = restore(whole), restore(resumed)
  assert meta_a["step"] == meta_b["step"] == whole.train.steps == int(b["step"]), context
  assert_bitwise_equal(a, b)
  assert_bitwise_equal(restore(whole, best=True)[0], restore(resumed, best=True)[0])
  rows = [[(r["step"], r["split"], r.get("loss", r.get("nats"))) for r in map(
      json.loads, (pathlib.Path(c.workdir) / "metrics.jsonl").read_text().splitlines())]
      for c in (whole, resumed)]
  assert rows[0] == rows[1], context
  results = [json.loads((pathlib.Path(c.workdir) / "results.json").read_text())
             for c in (whole, resumed)]
  assert results[0]["scores"] == results[1]["scores"], context
