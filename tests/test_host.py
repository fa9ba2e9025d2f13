"""inn_jax/train/host.py: when the trainer's process restarts itself with malloc's huge pages, that
the restart keeps the process and its arguments, that glibc then maps huge pages, and that
train.py and `python -m inn_jax.train` start that way (results.json records it)."""

import json
import os
import subprocess
import sys

import pytest

from inn_jax.train import host
from tests import train_cli

TUNABLE = "glibc.malloc.hugetlb=1"
HERE = dict(mode="madvise", glibc=(2, 36))  # A host where the tunable applies.


def test_the_tunable_joins_the_environments_own():
  assert host.with_huge_pages({"A": "1"}) == {"A": "1", "GLIBC_TUNABLES": TUNABLE}
  got = host.with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=1:glibc.malloc.hugetlb=0"})
  assert got["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=1:glibc.malloc.hugetlb=1"


def test_the_environment_changes_only_where_the_tunable_would_act():
  assert host.huge_pages_env({"A": "1"}, **HERE) == {"A": "1", "GLIBC_TUNABLES": TUNABLE}
  assert host.huge_pages_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, **HERE) == {
      "GLIBC_TUNABLES": "glibc.malloc.arena_max=2:" + TUNABLE}
  assert host.huge_pages_env({"INN_HUGE_PAGES": "1"}, **HERE) is not None
  for env in ({"INN_HUGE_PAGES": "0"},  # Opted out.
              {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"},  # The user's own choice stands.
              {"GLIBC_TUNABLES": TUNABLE}):  # Already started with it: no second restart.
    assert host.huge_pages_env(env, **HERE) is None
  # THP `always` gives huge pages without the tunable, `never` refuses them; glibc < 2.35 and
  # other C libraries do not know it.
  for where in (dict(mode="always", glibc=(2, 36)), dict(mode="never", glibc=(2, 36)),
                dict(mode="madvise", glibc=(2, 34))):
    assert host.huge_pages_env({}, **where) is None


def test_the_kernels_mode_is_read_from_its_bracketed_word(tmp_path):
  path = tmp_path / "enabled"
  for text, mode in (("always [madvise] never\n", "madvise"), ("[always] madvise never", "always"),
                     ("always madvise [never]", "never"), ("garbled", None)):
    path.write_text(text)
    assert host.thp_mode(path) == mode
  assert host.thp_mode(tmp_path / "missing") is None


def test_importing_the_trainers_package_does_not_import_jax():
  """host must run before JAX is imported; `inn_jax.train`'s names still resolve on use."""
  code = ("import sys, inn_jax.train; from inn_jax.train import host; "
          "assert 'jax' not in sys.modules, 'jax imported'; "
          "from inn_jax.train import Run, run, load; import jax; print('ok')")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=120, env={**os.environ, "PYTHONPATH": str(train_cli.REPO)})
  assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


_PROBE = r"""
import ctypes, os, resource, sys
from inn_jax.train import host
host.start_with_huge_pages()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
size = 64 << 20  # Above malloc's mmap threshold: a fresh mapping, as XLA's temp buffer.
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
p = libc.malloc(ctypes.c_size_t(size))
ctypes.memset(p, 1, size)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(os.getpid(), os.environ.get("GLIBC_TUNABLES"), faults, host.malloc_huge_pages(),
      " ".join(sys.argv[1:]))
"""


def _probe(env: dict) -> tuple[int, str, int, bool, str, int]:
  proc = subprocess.Popen([sys.executable, "-c", _PROBE, "a", "b c"], text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env={**env, "PYTHONPATH": str(train_cli.REPO)})
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err
  pid, tunables, faults, huge, args = out.strip().split(" ", 4)
  return int(pid), tunables, int(faults), huge == "True", args, proc.pid


def test_the_restart_keeps_the_process_and_its_arguments_and_glibc_maps_huge_pages():
  base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "INN_HUGE_PAGES")}
  pid, tunables, faults, huge, args, started = _probe(base)
  assert (pid, args) == (started, "a b c")  # Same process id (exec), same arguments.
  expected = host.huge_pages_env(base)
  assert tunables == (expected["GLIBC_TUNABLES"] if expected else "None")
  assert huge == (expected is not None)
  _, tunables_off, faults_off, huge_off, _, _ = _probe({**base, "INN_HUGE_PAGES": "0"})
  assert (tunables_off, huge_off) == ("None", False)
  assert faults_off >= (64 << 20) // 4096  # One fault per 4 KiB page touched.
  if expected is None:
    pytest.skip(f"huge pages do not apply on this host (THP mode {host.thp_mode()}, glibc "
                f"{host.glibc_version()}); the restart was checked not to happen")
  assert faults < faults_off / 8, (faults, faults_off)  # 2 MiB pages: far fewer faults.


def test_train_py_and_the_module_start_with_huge_pages_where_they_apply(tmp_path):
  path, env = train_cli.config_file(tmp_path, steps=2, mesh_data=1), train_cli.env(1)
  env = {k: v for k, v in env.items() if k not in ("GLIBC_TUNABLES", "INN_HUGE_PAGES")}
  expected = host.huge_pages_env(env) is not None
  work = tmp_path / "run"
  subprocess.run(train_cli.command(path, workdir=work), env=env, check=True,
                 cwd=train_cli.REPO, capture_output=True, timeout=600)
  assert json.loads((work / "results.json").read_text())["malloc_huge_pages"] == expected
  # The module's entry point: restarted too (an error of the user's making, one line, exit 2).
  proc = subprocess.run([sys.executable, "-m", "inn_jax.train", "--config", str(path),
                         "--config.model.n_heads=5", f"--config.workdir={tmp_path / 'bad'}"],
                        env=env, cwd=train_cli.REPO, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
  assert proc.stderr.startswith("error: config.model.n_heads: 5")
