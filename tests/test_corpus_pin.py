"""The pinned pydoc corpus (issue 34): the text ships compressed with its sha256 and length,
does not depend on the running Python, a damaged or replaced file is refused, the build script
reproduces it on CPython 3.12.1 (and refuses other versions), and every run records its corpus.
The study's side (registration, refusing another corpus): tests/test_study.py."""

import hashlib
import importlib.util
import json
import lzma
import pathlib
import platform
import sys
import sysconfig

import numpy as np
import pytest

from inn_jax import data
from inn_jax.data import text as text_lib
from inn_jax.train import runner
from inn_jax.train import workdir as workdir_lib
from tests import tiny as testing

REPO = pathlib.Path(__file__).resolve().parents[1]
SHA256 = "ed444eb8a66946bffed27d857eb0cc3945ffea822daf0389dc261e87206b14df"  # CPython 3.12.1's.
CHARS = 1_901_128
# What the registered studies' runs recorded (config.json, resolved.corpus_sha256): the ids of
# pydoc in text8 form, 1,728,937 of them.
TEXT8_IDS = 1_728_937
TEXT8_IDS_SHA256 = "624f911028dad6563d5335a9fb6f85e41bb43c17ffa3743b0b478e68225b08e0"


def _script():
  spec = importlib.util.spec_from_file_location("build_pydoc_corpus",
                                                REPO / "scripts" / "build_pydoc_corpus.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_the_shipped_corpus_has_its_pinned_hash_and_length():
  packed = text_lib.PYDOC_FILE.read_bytes()
  raw = lzma.decompress(packed)
  assert (text_lib.PYDOC_SHA256, text_lib.PYDOC_CHARS) == (SHA256, CHARS)
  assert hashlib.sha256(raw).hexdigest() == SHA256 and len(raw.decode("utf-8")) == CHARS
  assert len(packed) < 600_000  # About 431 kB in git.
  assert text_lib.pydoc_text() == raw.decode("utf-8")
  corpus = data.load_corpus({"name": "pydoc", "normalize": "text8"})
  record = workdir_lib.corpus_record(corpus)
  assert record == {"name": "pydoc", "sha256": SHA256, "chars": CHARS, "files": None,
                    "tokens": TEXT8_IDS, "tokens_sha256": TEXT8_IDS_SHA256}
  assert "CPython 3.12.1" in corpus.meta["source"][0]


def test_pydoc_text_does_not_depend_on_the_running_python(monkeypatch, tmp_path):
  """What the text was built from (pydoc_data, the standard library's sources) made another
  Python's: the text read is the same, the text built from it is not."""
  import pydoc_data.topics
  before = text_lib.pydoc_text.__wrapped__()
  stdlib = tmp_path / "lib"
  stdlib.mkdir()
  (stdlib / "only.py").write_text('"""Another Python\'s one module."""\n')
  monkeypatch.setattr(sysconfig, "get_paths", lambda *a, **k: {"stdlib": str(stdlib)})
  monkeypatch.setattr(pydoc_data.topics, "topics", {"assert": "Another assert topic."})
  monkeypatch.setattr(sys, "version", "3.13.0 (another)")
  monkeypatch.setattr(sys, "version_info", (3, 13, 0, "final", 0))
  assert text_lib.build_pydoc_text() == "Another assert topic.\n\nAnother Python's one module.\n"
  assert text_lib.pydoc_text.__wrapped__() == before
  assert hashlib.sha256(before.encode()).hexdigest() == SHA256
  assert "3.12.1" in text_lib.pydoc_source() and "3.13" not in text_lib.pydoc_source()


def test_a_damaged_or_replaced_shipped_corpus_is_refused(monkeypatch, tmp_path):
  text = text_lib.pydoc_text()
  replaced = tmp_path / "replaced.txt.xz"  # Another text: one character changed.
  replaced.write_bytes(lzma.compress(("X" + text[1:]).encode()))
  with pytest.raises(ValueError, match=r"replaced.txt.xz: the shipped pydoc corpus has sha256 "
                                       r"[0-9a-f]{16}\.\.\. and 1,901,128 characters, pinned "
                                       r"ed444eb8a66946bf\.\.\. and 1,901,128: it is damaged or "
                                       r"replaced; restore it \(git checkout --"):
    text_lib.read_pydoc(replaced)
  longer = tmp_path / "longer.txt.xz"
  longer.write_bytes(lzma.compress((text + "more\n").encode()))
  with pytest.raises(ValueError, match="and 1,901,133 characters, pinned"):
    text_lib.read_pydoc(longer)
  garbled = tmp_path / "garbled.txt.xz"
  packed = bytearray(text_lib.PYDOC_FILE.read_bytes())
  packed[1000] ^= 0xFF
  garbled.write_bytes(bytes(packed))
  with pytest.raises(ValueError, match="garbled.txt.xz: the shipped pydoc corpus is not xz data"):
    text_lib.read_pydoc(garbled)
  with pytest.raises(FileNotFoundError, match="the shipped pydoc corpus is missing; restore it"):
    text_lib.read_pydoc(tmp_path / "absent.txt.xz")
  # Through the loader, uncached: the run is refused before any model work.
  monkeypatch.setattr(text_lib, "PYDOC_FILE", replaced)
  text_lib.pydoc_text.cache_clear()
  try:
    with pytest.raises(ValueError, match="damaged or replaced"):
      data.load_corpus({"name": "pydoc"})
  finally:
    text_lib.pydoc_text.cache_clear()


def test_the_build_script_refuses_other_pythons(monkeypatch, capsys, tmp_path):
  script = _script()
  monkeypatch.setattr(platform, "python_version", lambda: "3.13.0")
  out = tmp_path / "pydoc.txt.xz"
  assert script.main(["--out", str(out)]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: this is CPython 3.13.0; the shipped corpus is CPython 3.12.1's")
  assert "--force" in err and err.count("\n") == 1 and not out.exists()


@pytest.mark.skipif(platform.python_implementation() != "CPython"
                    or platform.python_version() != "3.12.1",
                    reason="the shipped text is CPython 3.12.1's documentation")
def test_the_build_script_reproduces_the_shipped_file(tmp_path, capsys):
  out = tmp_path / "pydoc.txt.xz"
  assert _script().main(["--out", str(out)]) == 0
  assert lzma.decompress(out.read_bytes()) == lzma.decompress(text_lib.PYDOC_FILE.read_bytes())
  assert out.read_bytes() == text_lib.PYDOC_FILE.read_bytes()  # The same xz, byte for byte.
  assert f"sha256 {SHA256}" in capsys.readouterr().out


def _results_and_config(config) -> tuple[dict, dict]:
  w = pathlib.Path(config.workdir)
  return (json.loads((w / "results.json").read_text()),
          json.loads((w / "config.json").read_text()))


def test_a_run_records_its_corpus(tmp_path):
  """results.json and config.json's resolved record the text's sha256 and length (pydoc), and
  for arrays in memory the sha256 and count of the ids."""
  c = testing.tiny_config(tmp_path / "pydoc", steps=2)
  split = (0.998, 0.001, 0.001)  # Small eval splits: a quick run.
  c.data.update(name="pydoc", path=None, normalize="text8", max_chars=4000, split=split)
  c.mesh.data = 1
  c.eval.update(carry_state="no", splits=("valid",))
  results = runner.train(c)
  saved, config = _results_and_config(c)
  record = results["corpus"]
  assert saved["corpus"] == config["resolved"]["corpus"] == record
  assert (record["name"], record["sha256"], record["chars"]) == ("pydoc", SHA256, CHARS)
  assert record["tokens_sha256"] == config["resolved"]["corpus_sha256"]
  _, valid, test = data.corpora.split_fractions(TEXT8_IDS, split)
  assert record["tokens"] == 4000 + (valid.stop - valid.start) + (test.stop - test.start)

  rng = np.random.default_rng(0)
  ids = [rng.integers(0, 5, n) for n in (3000, 400, 400)]
  corpus = data.corpus_from_arrays(*ids, "abcde")
  a = testing.tiny_config(tmp_path / "arrays", steps=2)
  a.mesh.data = 1
  r = runner.Run(a, corpus=corpus)  # What train() records, without training.
  r.record(0)
  record = r.results({}, {"step": 0, "tokens_seen": 0, "train_time": 0.0})["corpus"]
  assert record == {"name": "arrays", "sha256": None, "chars": None, "files": None,
                    "tokens": 3800, "tokens_sha256": workdir_lib.corpus_sha256(corpus)}
  config = json.loads((pathlib.Path(a.workdir) / "config.json").read_text())
  assert config["resolved"]["corpus"] == record
  r.checkpoints.close()
