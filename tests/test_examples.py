"""examples/library.py runs as a researcher runs it (4 fake CPU devices, from another folder):
its own optax loop learns, its own (batch, model) mesh (Explicit and Auto axes) computes what
one device computes, the trainer on arrays in memory writes a workdir that inn_jax.load reads
(onto one device and onto a mesh) as plain Orbax does, and the sampler draws with a key, a
nucleus and a stop token: every recipe of docs/library.md."""

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
  assert "own loop: loss" in out
  for axes in ("Explicit", "Auto"):
    assert f"own mesh ({axes}): per-neuron kernel split P('model'" in out
  assert "trainer: valid BPC" in out and "sample: 'the " in out
  assert "plain orbax: the same parameters" in out
  assert "load onto a mesh: per-neuron kernel split P('model'" in out
  assert "sampled words (key, top_p 0.9, stop at ' ')" in out
  assert "Sharding info not provided" not in proc.stderr  # The Orbax recipe names shardings.
  assert (tmp_path / "run" / "results.json").is_file()
