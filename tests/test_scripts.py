"""The shell scripts on this machine: scripts/find_python.sh (used by scripts/setup.sh and so by
.ci/run) finds a Python >= 3.12 where `python3.12` is not one, and benchmarks/gpu_check.sh
without a GPU says so and does nothing."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def fake_python(path: pathlib.Path, new_enough: bool):
  """An executable that answers the finder's version check (exit 0: >= 3.12)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(f"#!/bin/sh\nexit {0 if new_enough else 1}\n")
  path.chmod(0o755)


def find_python(tmp_path, versions: dict, **env) -> subprocess.CompletedProcess:
  """find_python with a PATH holding only failing python3/python3.12 (an old python3 and a pyenv
  shim of an unselected version) and the tools it uses, and pyenv's `versions` {name: ok}."""
  bin_dir = tmp_path / "bin"
  fake_python(bin_dir / "python3", False)
  fake_python(bin_dir / "python3.12", False)
  for tool in ("ls", "sort", "grep"):
    if not (bin_dir / tool).exists():
      (bin_dir / tool).symlink_to(shutil.which(tool))
  for name, ok in versions.items():
    fake_python(tmp_path / "pyenv" / "versions" / name / "bin" / "python3", ok)
  return subprocess.run(
      [shutil.which("bash"), "-c", ". scripts/find_python.sh && find_python"], cwd=REPO,
      capture_output=True, text=True, timeout=60,
      env={"PATH": str(bin_dir), "HOME": str(tmp_path), "PYENV_ROOT": str(tmp_path / "pyenv"),
           **env})


@pytest.mark.parametrize("versions, chosen", [
    ({"3.11.7": False, "3.12.1": True, "3.13.0": True, "3.12.9": True}, "3.12.9"),
    ({"3.11.7": False, "3.13.0": True}, "3.13.0"),
    ({"3.11.7": False, "3.12.1": False, "3.13.0": True}, "3.13.0"),
    ({"3.11.7": False}, None),
], ids=["newest_3.12_first", "else_the_newest", "a_broken_3.12", "none"])
def test_find_python_looks_past_failing_names_into_pyenv(tmp_path, versions, chosen):
  out = find_python(tmp_path, versions)
  if chosen is None:
    assert out.returncode == 1 and out.stdout == ""
  else:
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tmp_path / "pyenv" / "versions" / chosen / "bin" / "python3")


def test_find_python_takes_python_from_the_environment_or_refuses_it(tmp_path):
  good = tmp_path / "mine" / "python"
  fake_python(good, True)
  out = find_python(tmp_path, {"3.12.1": True}, PYTHON=str(good))
  assert out.returncode == 0 and out.stdout.strip() == str(good)
  out = find_python(tmp_path, {"3.12.1": True}, PYTHON=str(tmp_path / "bin" / "python3"))
  assert out.returncode == 1 and "is not a Python >= 3.12" in out.stderr


def test_setup_and_ci_share_the_finder():
  setup = (REPO / "scripts" / "setup.sh").read_text()
  ci = (REPO / ".ci" / "run").read_text()
  assert ". scripts/find_python.sh" in setup and "find_python()" not in setup
  assert "bash scripts/setup.sh --fresh" in ci and "find_python" not in ci


def test_gpu_check_without_a_gpu_says_so_and_does_nothing():
  results = REPO / "benchmarks" / "results" / "gpu"
  before = sorted(p.stat().st_mtime_ns for p in results.rglob("*")) if results.exists() else None
  out = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=REPO, capture_output=True,
                       text=True, timeout=300,
                       env={**os.environ, "PYTHON": sys.executable, "JAX_PLATFORMS": "cpu"})
  assert out.returncode == 3
  assert out.stderr.startswith("gpu_check: no GPU: JAX's backend here is 'cpu'.")
  assert out.stderr.rstrip().endswith("Nothing was run.") and out.stdout == ""
  after = sorted(p.stat().st_mtime_ns for p in results.rglob("*")) if results.exists() else None
  assert after == before
