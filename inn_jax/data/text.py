"""Text helpers: text8-style normalisation and the offline ``pydoc`` corpus.

The pydoc corpus is the English documentation that ships inside CPython 3.12.1: every help topic of
``pydoc_data.topics`` (sorted by name), then the module, class and function docstrings of the
standard library's ``.py`` sources (sorted by path, in source order), read with ``ast`` so that no
module is imported; packages that distributions often split out (tkinter, idlelib, test, ...) are
left out. Each Python version documents itself differently (1,901,128 characters on 3.12.1,
others on 3.11 or 3.13), so the text is not built from the running Python: it ships with the
package, xz-compressed, as ``pydoc.txt.xz`` (built once by ``scripts/build_pydoc_corpus.py`` on
CPython 3.12.1 with ``build_pydoc_text``), and ``pydoc_text`` refuses it unless its sha256 and
length are PYDOC_SHA256 and PYDOC_CHARS. ``corpus.meta`` records both.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import lzma
import os
import pathlib
import re
import sysconfig

_DIGIT_WORDS = "zero one two three four five six seven eight nine".split()
_TEXT8_TABLE = {ord(c): c.lower() for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}
_TEXT8_TABLE.update({ord(str(d)): f" {w} " for d, w in enumerate(_DIGIT_WORDS)})
_NOT_LETTERS = re.compile(r"[^a-z]+")

# The shipped pydoc corpus: the text of build_pydoc_text() on CPython 3.12.1, UTF-8, xz-compressed.
PYDOC_FILE = pathlib.Path(__file__).with_name("pydoc.txt.xz")
PYDOC_SHA256 = "ed444eb8a66946bffed27d857eb0cc3945ffea822daf0389dc261e87206b14df"  # Of the UTF-8.
PYDOC_CHARS = 1_901_128
PYDOC_PYTHON = "3.12.1"  # The CPython whose documentation it is.
PYDOC_BUILD = "scripts/build_pydoc_corpus.py"

# Left out: tests, GUI and tooling packages that distributions ship separately, and site-packages.
_SKIP_DIRS = frozenset({"test", "tests", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip",
                        "venv", "distutils", "site-packages", "dist-packages", "__pycache__",
                        "__phello__", "lib-dynload"})


def normalize_text8(text: str) -> str:
  """Lower-cases A-Z, spells digits out, turns every run of other characters into one space.

  The core of Mahoney's wikifil.pl (text8's filter) without its Wikipedia-markup stripping: the
  result uses the 27 symbols a-z and space.
  """
  return _NOT_LETTERS.sub(" ", text.translate(_TEXT8_TABLE))


def _docstrings(node):
  """Docstrings of a module, its classes and functions, in source order."""
  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
    doc = ast.get_docstring(node)
    if doc:
      yield doc
  for child in ast.iter_child_nodes(node):
    if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      yield from _docstrings(child)


def _stdlib_sources(root: str) -> list[str]:
  paths = []
  for here, dirs, files in os.walk(root):
    dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("config-"))
    paths += [os.path.join(here, f) for f in sorted(files)
              if f.endswith(".py") and not f.startswith("_sysconfigdata")]
  return sorted(paths, key=lambda p: os.path.relpath(p, root))


def build_pydoc_text() -> str:
  """The pydoc corpus built from the running Python's documentation (about two seconds): what
  scripts/build_pydoc_corpus.py ships, on CPython 3.12.1. Training reads the shipped text instead
  (pydoc_text), which does not depend on the running Python."""
  try:
    from pydoc_data import topics
  except ImportError as e:
    raise FileNotFoundError("the pydoc corpus needs the standard library's pydoc_data package, "
                            "which this Python install lacks; use data.name='text_file' with a "
                            "local file instead.") from e
  parts = [topics.topics[k] for k in sorted(topics.topics)]
  root = sysconfig.get_paths()["stdlib"]
  for path in _stdlib_sources(root):
    with open(path, "rb") as f:
      source = f.read()
    try:
      tree = ast.parse(source)
    except (SyntaxError, ValueError):  # A stray file of another Python version: not documentation.
      continue
    parts.extend(_docstrings(tree))
  parts = [p.strip() for p in parts]
  return "\n\n".join(p for p in parts if p) + "\n"


def read_pydoc(path=None) -> str:
  """The shipped pydoc corpus (PYDOC_FILE), refused unless its sha256 and length are the pinned
  ones: a damaged or replaced file is an error, never another corpus."""
  path = pathlib.Path(path or PYDOC_FILE)
  fix = (f"restore it (git checkout -- inn_jax/data/{PYDOC_FILE.name}, or reinstall inn_jax); "
         f"{PYDOC_BUILD} rebuilds it on CPython {PYDOC_PYTHON}")
  try:
    data = lzma.decompress(path.read_bytes())
  except FileNotFoundError:
    raise FileNotFoundError(f"{path}: the shipped pydoc corpus is missing; {fix}.") from None
  except lzma.LZMAError as e:
    raise ValueError(f"{path}: the shipped pydoc corpus is not xz data ({e}); {fix}.") from None
  sha = hashlib.sha256(data).hexdigest()
  text = data.decode("utf-8", errors="replace")
  if sha != PYDOC_SHA256 or len(text) != PYDOC_CHARS:
    raise ValueError(f"{path}: the shipped pydoc corpus has sha256 {sha[:16]}... and "
                     f"{len(text):,} characters, pinned {PYDOC_SHA256[:16]}... and "
                     f"{PYDOC_CHARS:,}: it is damaged or replaced; {fix}.")
  return text


@functools.lru_cache(maxsize=1)
def pydoc_text() -> str:
  """The offline corpus (see the module docstring): the shipped text, checked, then cached."""
  return read_pydoc()


def pydoc_source() -> str:
  """Where the pydoc corpus comes from, for ``corpus.meta``."""
  return (f"inn_jax/data/{PYDOC_FILE.name}: pydoc_data.topics + standard-library docstrings of "
          f"CPython {PYDOC_PYTHON} ({PYDOC_BUILD})")
