"""benchmarks/host_pages.py: its two sides' environments, and its flag checks."""

import importlib.util
import pathlib
import subprocess
import sys

from inn_jax.train import host

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "host_pages.py"
_SPEC = importlib.util.spec_from_file_location("host_pages", SCRIPT)
host_pages = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(host_pages)


def test_the_system_side_turns_the_trainers_huge_pages_off_and_the_other_side_on():
  envs = host_pages.sides({"A": "1", "GLIBC_TUNABLES": "glibc.malloc.arena_max=1"})
  assert envs["system"] == {"A": "1", "INN_HUGE_PAGES": "0"}
  assert envs["huge_pages"] == {
      "A": "1", "GLIBC_TUNABLES": "glibc.malloc.arena_max=1:glibc.malloc.hugetlb=1"}
  # Neither side is restarted by the trainer's entry points: each is what it says.
  assert all(host.huge_pages_env(e, mode="madvise", glibc=(2, 36)) is None
             for e in envs.values())


def test_bad_flags_exit_2_with_one_line():
  proc = subprocess.run([sys.executable, str(SCRIPT), "--batch", "4"], capture_output=True,
                        text=True, timeout=60)
  assert proc.returncode == 2 and "--batch 4 --seq 0" in proc.stderr.strip().splitlines()[-1]
