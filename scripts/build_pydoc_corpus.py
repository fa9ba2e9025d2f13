"""Builds the shipped pydoc corpus, inn_jax/data/pydoc.txt.xz, from the running Python.

    python scripts/build_pydoc_corpus.py           # on CPython 3.12.1: write it, print its pins
    python scripts/build_pydoc_corpus.py --check   # build, compare with the shipped file

The text is inn_jax.data.text.build_pydoc_text(): pydoc_data.topics and the standard library's
docstrings of the running Python, UTF-8, compressed with the standard library's lzma (xz, preset
9). The studies in benchmarks/studies/ trained on CPython 3.12.1's text (1,901,128 characters,
sha256 ed444eb8...), so any other Python is refused unless --force: each version documents itself
differently (3.11 and 3.13 give other text), and a different text is a different corpus, which
every registered study refuses. After --force, set PYDOC_SHA256 and PYDOC_CHARS in
inn_jax/data/text.py to the printed values, or the package refuses the new file.
"""

from __future__ import annotations

import argparse
import hashlib
import lzma
import os
import pathlib
import platform
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # The inn_jax beside this script.

from inn_jax.data import text as text_lib  # noqa: E402


def python_is_pinned() -> bool:
  return (platform.python_implementation() == "CPython"
          and platform.python_version() == text_lib.PYDOC_PYTHON)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="scripts/build_pydoc_corpus.py",
                              description=__doc__.split("\n")[0])
  p.add_argument("--out", default=str(text_lib.PYDOC_FILE), help="where the .xz goes")
  p.add_argument("--check", action="store_true",
                 help="build and compare with the shipped file; write nothing")
  p.add_argument("--force", action="store_true",
                 help=f"build on a Python other than CPython {text_lib.PYDOC_PYTHON} (a new "
                 "corpus: registered studies refuse it)")
  args = p.parse_args(argv)
  if not python_is_pinned() and not args.force:
    print(f"error: this is {platform.python_implementation()} {platform.python_version()}; the "
          f"shipped corpus is CPython {text_lib.PYDOC_PYTHON}'s documentation (each version's "
          "differs, and the registered studies trained on that one). Run this with CPython "
          f"{text_lib.PYDOC_PYTHON}, or pass --force to build a new corpus.", file=sys.stderr)
    return 2
  text = text_lib.build_pydoc_text()
  data = text.encode("utf-8")
  sha = hashlib.sha256(data).hexdigest()
  pinned = sha == text_lib.PYDOC_SHA256 and len(text) == text_lib.PYDOC_CHARS
  print(f"built on {platform.python_implementation()} {platform.python_version()}: "
        f"{len(text):,} characters, {len(data):,} bytes, sha256 {sha}")
  if args.check:
    shipped = text_lib.read_pydoc(args.out)
    same = shipped == text
    print(f"{args.out}: {'the same text' if same else 'DIFFERS from the built text'}")
    return 0 if same else 1
  packed = lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=9)
  out = pathlib.Path(args.out)
  tmp = out.with_name(out.name + ".part")
  tmp.write_bytes(packed)
  os.replace(tmp, out)
  print(f"wrote {out} ({len(packed):,} bytes)")
  if not pinned:
    print(f"this is a new corpus: set PYDOC_SHA256 = \"{sha}\" and PYDOC_CHARS = {len(text):_} "
          f"(and PYDOC_PYTHON) in inn_jax/data/text.py", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
