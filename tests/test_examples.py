"""examples/library.py runs as a researcher runs it (4 fake CPU devices, from another folder):
its own optax loop learns, its own (batch, model) mesh computes what one device computes, the
trainer on arrays in memory writes a workdir that inn_jax.load reads and samples from."""

import pathlib
import subprocess
import sys

from tests import train_cli

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_the_library_example_runs(tmp_path):
  proc = subprocess.run([sys.executable, str(REPO / "examples" / "library.py"), "--workdir",
                         str(tmp_path / "run")], cwd=tmp_path, capture_output=True, text=True,
                        env=train_cli.env(4))
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  assert "own loop: loss" in out and "own mesh: per-neuron kernel split P('model'" in out
  assert "trainer: valid BPC" in out and "sample: 'the " in out
  assert (tmp_path / "run" / "results.json").is_file()
