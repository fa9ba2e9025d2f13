"""The package as pip installs it: the wheel ships the experiment configs and py.typed, not the
test helpers, and names the console script; the configs resolve by name from any folder, so
`python -m inn_jax.train --config quickstart` runs outside the repository. The whole round trip
(pip install . into a fresh venv, train, inn_jax.load, sample) is the slow test at the end."""

import ast
import json
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

from inn_jax.train import config as config_lib
from tests import train_cli

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  """The wheel, built offline from a copy of the sources (the build writes build/ beside them)."""
  src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
  shutil.copytree(REPO / "inn_jax", src / "inn_jax",
                  ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(REPO / name, src / name)
  proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps",
                         "--no-build-isolation", "--no-index", "-q", "-w", str(out)],
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  (path,) = out.glob("inn_jax-*.whl")
  return zipfile.ZipFile(path)


def test_the_wheel_ships_configs_and_types_not_test_helpers(wheel):
  names = set(wheel.namelist())
  shipped = {n.rpartition("/")[2] for n in names if n.startswith("inn_jax/configs/")}
  assert {"quickstart.py", "text8.py", "study.py", "ptb.py"} <= shipped
  assert "inn_jax/py.typed" in names
  assert "inn_jax/data/pydoc.txt.xz" in names  # The pinned pydoc corpus (tests/test_corpus_pin.py).
  # The CPU kernels' sources, built where they run.
  assert {"inn_jax/ops/cpu_scan.cc", "inn_jax/ops/cpu_attention.cc",
          "inn_jax/ops/cpu_parallel.h", "inn_jax/ops/cpu_math.h"} <= names
  assert not [n for n in names if n.endswith("testing.py") or n.startswith("tests/")]
  entry = next(n for n in names if n.endswith("entry_points.txt"))
  assert "inn-train = inn_jax.train.__main__:main" in wheel.read(entry).decode()
  meta = wheel.read(next(n for n in names if n.endswith("METADATA"))).decode()
  core = [l for l in meta.splitlines() if l.startswith("Requires-Dist") and "extra ==" not in l]
  assert not [l for l in core if any(p in l for p in ("matplotlib", "tensorboardX", "tqdm"))]


def test_shipped_configs_resolve_by_name_and_by_path():
  by_name = config_lib.load("text8:inn_paper")
  by_path = config_lib.load(str(REPO / "configs" / "text8.py") + ":inn_paper")
  assert by_name.to_dict() == by_path.to_dict()
  assert set(config_lib.shipped()) >= {"quickstart", "text8", "ptb", "study"}
  with pytest.raises(FileNotFoundError, match="or one of \\['enwik8', 'ptb', 'quickstart'"):
    config_lib.load("quickstrat")


def test_python_m_inn_jax_train_runs_outside_the_repository(tmp_path):
  corpus = tmp_path / "tiny.txt"
  corpus.write_text("abc def ghi " * 300)
  argv = ["--config", "quickstart", "--workdir", str(tmp_path / "w"),
          "--config.data.name=text_file", f"--config.data.path={corpus}",
          "--config.model.d_model=16", "--config.model.n_layers=1", "--config.data.seq_len=16",
          "--config.data.batch_size=4", "--config.data.eval_batch_size=4",
          "--config.train.steps=2", "--config.train.eval_every=2", "--config.train.save_every=2",
          "--config.log.progress=false", "--config.mesh.data=1"]
  proc = subprocess.run([sys.executable, "-m", "inn_jax.train", *argv], cwd=tmp_path,
                        capture_output=True, text=True, env=train_cli.env(1))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert json.loads((tmp_path / "w" / "results.json").read_text())["steps"] == 2
  bad = subprocess.run([sys.executable, "-m", "inn_jax.train", "--config", "quickstart",
                        "--config.model.scan_method=blockd"], cwd=tmp_path, capture_output=True,
                       text=True, env=train_cli.env(1))
  assert bad.returncode == 2 and bad.stderr.count("\n") == 1
  assert bad.stderr.startswith("error: config.model.scan_method='blockd' must be one of")
  assert not (tmp_path / "workdirs").exists()  # Refused before anything was written.


@pytest.mark.slow
def test_pip_install_then_train_load_and_sample_from_another_folder(tmp_path):
  """Issue 22's acceptance: a fresh venv, `pip install .` (from the package registry), then from
  a folder outside the repository the quickstart trains and inn_jax.load samples from it."""
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
  py = str(venv / "bin" / "python")
  pins = [f"-r{REPO / 'requirements.txt'}"]
  subprocess.run([py, "-m", "pip", "install", "-q", *pins], check=True)
  subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", str(REPO)], check=True)
  work = tmp_path / "elsewhere"
  work.mkdir()
  steps = "--config.train.steps=40"
  subprocess.run([py, "-m", "inn_jax.train", "--config", "quickstart", "--workdir", "w", steps,
                  "--config.train.eval_every=20", "--config.train.save_every=20",
                  "--config.log.progress=false"], cwd=work, check=True)
  code = ("import inn_jax, numpy as np\nfrom inn_jax.sample import Sampler\n"
          "m, v, c = inn_jax.load('w')\n"
          "out = Sampler(m)(np.asarray([v.encode('the ')]), 30, temperature=0.0)\n"
          "print(repr(v.decode(np.asarray(out.tokens_BL[0]))))")
  text = subprocess.run([py, "-c", code], cwd=work, check=True, capture_output=True,
                        text=True).stdout
  assert len(ast.literal_eval(text)) == 30
