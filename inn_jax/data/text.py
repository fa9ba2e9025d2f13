"""Text helpers: text8-style normalisation and the offline ``pydoc`` corpus.

The pydoc corpus is the English documentation that ships inside CPython: every help topic of
``pydoc_data.topics`` (sorted by name), then the module, class and function docstrings of the
standard library's ``.py`` sources (sorted by path, in source order), read with ``ast`` so that no
module is imported. Packages that distributions often split out (tkinter, idlelib, test, ...) are
left out, so the text is the same for a given Python version wherever it runs; ``corpus.meta``
records its sha256 for comparison. About 1.9M characters on CPython 3.12.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import sys
import sysconfig

_DIGIT_WORDS = "zero one two three four five six seven eight nine".split()
_TEXT8_TABLE = {ord(c): c.lower() for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}
_TEXT8_TABLE.update({ord(str(d)): f" {w} " for d, w in enumerate(_DIGIT_WORDS)})
_NOT_LETTERS = re.compile(r"[^a-z]+")

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


@functools.lru_cache(maxsize=1)
def pydoc_text() -> str:
  """The offline corpus (see the module docstring); takes about two seconds, then cached."""
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


def pydoc_source() -> str:
  """Where the pydoc corpus comes from, for ``corpus.meta``."""
  return (f"pydoc_data.topics + standard-library docstrings of Python "
          f"{sys.version.split()[0]} at {sysconfig.get_paths()['stdlib']}")
