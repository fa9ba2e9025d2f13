"""The trainer's process on a Linux host: glibc's malloc asks for transparent huge pages.

XLA:CPU mallocs each execution's temp buffer. glibc serves a chunk that large with a fresh mmap
and unmaps it when it is freed, so every step faults the whole buffer in again, 4 KiB at a time:
about 821,000 minor faults and 1.5 s of system time in a 6 s step of the paper INN at 4 x 128,
24,800 faults a step of the study INN (benchmarks/host_pages.py; its JSON in
benchmarks/results/). With the tunable `glibc.malloc.hugetlb=1` (glibc >= 2.35) malloc madvises
those mappings for 2 MiB pages where the kernel's transparent huge pages are `madvise`: a few
hundred faults a step, at the same peak RSS. glibc reads its tunables once, when the process
starts, so the trainer's entry points (train.py, `python -m inn_jax.train`, `inn-train`) call
start_with_huge_pages() first: it re-executes the interpreter, same arguments and process id,
with the tunable added. Nothing happens where it would change nothing (another libc, THP
`always` or `never`, the tunable already set) or where the user opted out (INN_HUGE_PAGES=0).

Standard library only, and no JAX: it runs before anything else is imported.
"""

from __future__ import annotations

import os
import pathlib
import sys

HUGE_PAGES = "glibc.malloc.hugetlb=1"
OPT_OUT = "INN_HUGE_PAGES"  # "0": start as the environment says, no re-execution.
_THP = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode(path: pathlib.Path = _THP) -> str | None:
  """The kernel's transparent huge page mode ("always", "madvise", "never"); None if unknown."""
  try:
    text = path.read_text()
  except OSError:
    return None
  return next((w[1:-1] for w in text.split() if w.startswith("[") and w.endswith("]")), None)


def glibc_version() -> tuple[int, int] | None:
  """(major, minor) of the C library this interpreter runs on, if it is glibc."""
  try:
    name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    major, minor = version.split(".")[:2]
    return (int(major), int(minor)) if name == "glibc" else None
  except (AttributeError, OSError, ValueError):
    return None


def with_huge_pages(env: dict) -> dict:
  """`env` with glibc's huge-page tunable added to any other tunables in its GLIBC_TUNABLES."""
  tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":")
              if t and not t.startswith("glibc.malloc.hugetlb=")]
  return {**env, "GLIBC_TUNABLES": ":".join([*tunables, HUGE_PAGES])}


def huge_pages_env(env: dict, mode: str | None = None,
                   glibc: tuple[int, int] | None = None) -> dict | None:
  """The environment to start a trainer's process in, or None where `env` is that already.

  None when `env` opts out (INN_HUGE_PAGES=0), already names glibc.malloc.hugetlb (the user's
  choice stands), or the tunable would do nothing here: not glibc >= 2.35, or a THP mode other
  than `madvise` (`always` gives huge pages without it, `never` refuses them). `mode` and
  `glibc` default to this machine's."""
  mode = thp_mode() if mode is None else mode
  glibc = glibc_version() if glibc is None else glibc
  if (env.get(OPT_OUT, "1") == "0" or "glibc.malloc.hugetlb=" in env.get("GLIBC_TUNABLES", "")
      or glibc is None or glibc < (2, 35) or mode != "madvise"):
    return None
  return with_huge_pages(env)


def malloc_huge_pages(env: dict | None = None) -> bool:
  """Whether this process's malloc asks for transparent huge pages as start_with_huge_pages()
  arranges: its environment named `glibc.malloc.hugetlb=1` (read at its start) and the kernel's
  THP mode honours it."""
  env = os.environ if env is None else env
  return (HUGE_PAGES in env.get("GLIBC_TUNABLES", "").split(":") and thp_mode() == "madvise"
          and (glibc_version() or (0, 0)) >= (2, 35))


def start_with_huge_pages():
  """Re-executes this interpreter with huge_pages_env(os.environ), where that is not None;
  returns otherwise. Call it first thing in an entry point, before JAX is imported (so nothing
  is paid twice); the new process finds the tunable set and goes on. An interactive session or
  a program read from stdin cannot be run again and is left as it is."""
  env = huge_pages_env(dict(os.environ))
  argv = getattr(sys, "orig_argv", None)
  if env is None or not argv or sys.flags.interactive or sys.argv[0] in ("", "-"):
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, argv, env)
