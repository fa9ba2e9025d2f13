"""benchmarks/host_pages.py: the huge-page tunable added to a process's environment, and its flag
checks."""

import importlib.util
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "host_pages.py"
_SPEC = importlib.util.spec_from_file_location("host_pages", SCRIPT)
host_pages = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(host_pages)


def test_the_tunable_joins_the_environments_own():
  assert host_pages.with_huge_pages({"A": "1"}) == {
      "A": "1", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
  got = host_pages.with_huge_pages(
      {"GLIBC_TUNABLES": "glibc.malloc.arena_max=1:glibc.malloc.hugetlb=0"})
  assert got["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=1:glibc.malloc.hugetlb=1"


def test_bad_flags_exit_2_with_one_line():
  proc = subprocess.run([sys.executable, str(SCRIPT), "--batch", "4"], capture_output=True,
                        text=True, timeout=60)
  assert proc.returncode == 2 and "--batch 4 --seq 0" in proc.stderr.strip().splitlines()[-1]
