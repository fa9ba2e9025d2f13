"""Every registered dataset, from tiny fake files laid out like the real ones, served on 127.0.0.1.

Layouts assumed (from the public download scripts): text8.zip and enwik8.zip each hold one member
named text8 / enwik8; wikitext-2-raw-v1.zip holds wikitext-2-raw/wiki.{train,valid,test}.raw;
simple-examples.tgz holds ./simple-examples/data/ptb.char.{train,valid,test}.txt, one sentence a
line, characters separated by spaces and '_' between words; ptb.{train,valid,test}.txt are plain.
"""

import hashlib
import io
import pathlib
import socket
import zipfile

import numpy as np
import pytest

from inn_jax import data
from tests import data_testing as testing
from tests.data_testing import tgz_bytes

LETTERS = " abcdefghijklmnopqrstuvwxyz"
FAKE_TEXT8 = "".join(LETTERS[(i * 7 + i // 27) % 27] for i in range(2000))


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
  for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv("no_proxy", "127.0.0.1")


def zip_bytes(members, method=zipfile.ZIP_DEFLATED):
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w", method) as z:
    for name, body in members.items():
      z.writestr(name, body)
  return buf.getvalue()


def sha(b):
  return hashlib.sha256(b).hexdigest()


def config(tmp_path, name, **overrides):
  cfg = data.default_data_config()
  cfg.name = name
  cfg.cache_dir = str(tmp_path / "cache")
  for key, value in overrides.items():
    cfg[key] = value
  return cfg


def closed_port_url(path):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return f"http://127.0.0.1:{s.getsockname()[1]}{path}"


def text8_ids(text):  # Independent of the vocab module: space 0, a..z 1..26.
  return np.array([0 if c == " " else ord(c) - ord("a") + 1 for c in text], np.uint8)


def test_text8_download_split_and_cache_hit(tmp_path):
  archive = zip_bytes({"text8": FAKE_TEXT8})
  with testing.serve({"/text8.zip": archive}) as server:
    cfg = config(tmp_path, "text8", url=server.url("/text8.zip"), size=len(archive))
    corpus = data.load_corpus(cfg)
    again = data.load_corpus(cfg)
    assert server.hits["/text8.zip"] == 1  # The second load came from the cache.
  assert corpus.level == "char" and corpus.vocab.size == 27
  assert corpus.meta["sizes"] == {"train": 1800, "valid": 100, "test": 100}
  ids = text8_ids(FAKE_TEXT8)
  for got, want in ((corpus.train, ids[:1800]), (corpus.valid, ids[1800:1900]),
                    (corpus.test, ids[1900:])):
    assert got.dtype == np.uint8 and np.array_equal(got, want)
  assert isinstance(again.train, np.memmap) and np.array_equal(again.test, ids[1900:])
  zip_path = tmp_path / "cache" / "text8" / "text8.zip"
  assert corpus.meta["sha256"] == {str(zip_path): sha(archive)}
  assert (tmp_path / "cache/text8/text8.zip.sha256").read_text().split()[0] == sha(archive)
  assert corpus.vocab.decode(corpus.valid) == FAKE_TEXT8[1800:1900]
  # Later loads memory-map the ids encoded by the first one (here altered to tell them apart).
  cached = pathlib.Path(corpus.meta["tokens_cache"])
  assert cached.parent == zip_path.parent
  np.save(cached, np.full(2000, 5, np.uint8))
  with testing.serve({}) as server:
    cfg.url = server.url("/text8.zip")
    assert (data.load_corpus(cfg).test == 5).all()


def test_text8_size_expectation_is_checked(tmp_path):
  archive = zip_bytes({"text8": FAKE_TEXT8})
  with testing.serve({"/text8.zip": archive}) as server:
    with pytest.raises(ValueError, match="expected 31,344,016"):  # The real text8.zip's size.
      data.load_corpus(config(tmp_path, "text8", url=server.url("/text8.zip")))
  assert list((tmp_path / "cache" / "text8").iterdir()) == []


def test_text8_tampered_cache_is_detected(tmp_path):
  archive = zip_bytes({"text8": FAKE_TEXT8}, zipfile.ZIP_STORED)
  with testing.serve({"/text8.zip": archive}) as server:
    cfg = config(tmp_path, "text8", url=server.url("/text8.zip"), size=len(archive))
    data.load_corpus(cfg)
  zip_path = tmp_path / "cache" / "text8" / "text8.zip"
  other = zip_bytes({"text8": FAKE_TEXT8[::-1]}, zipfile.ZIP_STORED)
  assert len(other) == len(archive)
  zip_path.write_bytes(other)  # Same size, other content.
  with pytest.raises(ValueError, match="first download"):
    data.load_corpus(cfg)


def test_text8_foreign_character(tmp_path):
  text = FAKE_TEXT8[:500] + "X" + FAKE_TEXT8[501:]
  archive = zip_bytes({"text8": text})
  with testing.serve({"/text8.zip": archive}) as server:
    cfg = config(tmp_path, "text8", url=server.url("/text8.zip"), size=len(archive))
    with pytest.raises(ValueError, match=r"'X' \(U\+0058\) at position 500") as e:
      data.load_corpus(cfg)
  assert "text8 in " in str(e.value) and "normalize='text8'" in str(e.value)
  assert not list((tmp_path / "cache" / "text8").glob("*.npy"))


def test_corrupt_zip(tmp_path):
  archive = bytearray(zip_bytes({"text8": FAKE_TEXT8}, zipfile.ZIP_STORED))
  archive[100] ^= 0xFF  # Inside the stored member: its CRC no longer matches.
  with testing.serve({"/text8.zip": bytes(archive)}) as server:
    cfg = config(tmp_path, "text8", url=server.url("/text8.zip"), size=0)
    with pytest.raises(ValueError, match="truncated or corrupt.*CRC"):
      data.load_corpus(cfg)


def test_truncated_zip_with_matching_checks_switched_off(tmp_path):
  archive = zip_bytes({"text8": FAKE_TEXT8})
  archive = archive[:len(archive) // 2]
  with testing.serve({"/text8.zip": archive}) as server:
    cfg = config(tmp_path, "text8", url=server.url("/text8.zip"), size=0, sha256="")
    with pytest.raises(ValueError, match="not a readable zip or tar archive"):
      data.load_corpus(cfg)


def test_zip_without_the_member(tmp_path):
  archive = zip_bytes({"other.txt": FAKE_TEXT8})
  with testing.serve({"/text8.zip": archive}) as server:
    cfg = config(tmp_path, "text8", url=server.url("/text8.zip"), size=0)
    with pytest.raises(ValueError, match="no member 'text8' \\(it holds: other.txt\\)"):
      data.load_corpus(cfg)


def test_text8_local_extracted_file_skips_download(tmp_path):
  (tmp_path / "text8").write_text(FAKE_TEXT8)
  cfg = config(tmp_path, "text8", path=str(tmp_path / "text8"), url=closed_port_url("/text8.zip"),
               max_chars=1000)
  corpus = data.load_corpus(cfg)
  assert corpus.meta["sizes"] == {"train": 1000, "valid": 100, "test": 100}
  assert np.array_equal(corpus.train, text8_ids(FAKE_TEXT8[:1000]))


def test_enwik8_bytes_and_checksum(tmp_path):
  raw = ("<page>Zürich €</page>\n" * 60).encode()
  archive = zip_bytes({"enwik8": raw})
  with testing.serve({"/enwik8.zip": archive}) as server:
    cfg = config(tmp_path, "enwik8", url=server.url("/enwik8.zip"), size=len(archive),
                 sha256=sha(archive))
    corpus = data.load_corpus(cfg)
    assert corpus.level == "byte" and corpus.vocab.size == 256
    joined = np.concatenate([corpus.train, corpus.valid, corpus.test])
    assert np.array_equal(joined, np.frombuffer(raw, np.uint8))
    assert len(corpus.train) == round(0.9 * len(raw))
    bad = config(tmp_path / "other", "enwik8", url=server.url("/enwik8.zip"), size=len(archive))
    with pytest.raises(ValueError, match="547994d9"):  # The real enwik8.zip's published sha256.
      data.load_corpus(bad)
  assert list((tmp_path / "other" / "cache" / "enwik8").iterdir()) == []
  with pytest.raises(ValueError, match="data.level='char' does not apply to enwik8"):
    data.load_corpus(config(tmp_path, "enwik8", level="char"))


def test_wikitext2_layout_and_unknown_characters(tmp_path):
  splits = {"train": " = Valkyria = \n The game 's plot .\n", "valid": " Über alles \n",
            "test": " the plot \n"}
  archive = zip_bytes({f"wikitext-2-raw/wiki.{s}.raw": t for s, t in splits.items()})
  with testing.serve({"/w.zip": archive}) as server:
    cfg = config(tmp_path, "wikitext2_char", url=server.url("/w.zip"), size=len(archive),
                 sha256=sha(archive))
    corpus = data.load_corpus(cfg)
  train_chars = sorted(set(splits["train"]))
  assert corpus.vocab.size == len(train_chars) + 1  # One unknown id, for Ü, b, e, r, s...
  assert corpus.vocab.decode(corpus.train) == splits["train"]
  unk = corpus.vocab.size - 1
  expected_valid = [train_chars.index(c) if c in train_chars else unk for c in splits["valid"]]
  assert corpus.valid.tolist() == expected_valid
  assert corpus.meta["sizes"] == {s: len(t) for s, t in splits.items()}
  # The same files, extracted, under data.path.
  for s, t in splits.items():
    (tmp_path / "wikitext-2-raw").mkdir(exist_ok=True)
    (tmp_path / "wikitext-2-raw" / f"wiki.{s}.raw").write_text(t)
  local = data.load_corpus(config(tmp_path, "wikitext2_char", path=str(tmp_path)))
  assert np.array_equal(local.valid, corpus.valid) and np.array_equal(local.test, corpus.test)
  with pytest.raises(ValueError, match="is one extracted file, but this dataset has 3"):
    data.load_corpus(config(tmp_path, "wikitext2_char",
                            path=str(tmp_path / "wikitext-2-raw" / "wiki.train.raw")))


def test_ptb_word_three_files_from_a_mirror(tmp_path):
  texts = {"train": " the cat sat \n the <unk> ran \n", "valid": " the cat \n",
           "test": " a dog \n"}
  files = {f"/mirror/ptb.{s}.txt": t.encode() for s, t in texts.items()}
  with testing.serve(files) as server:
    cfg = config(tmp_path, "ptb_word", url=server.url("/mirror/"),
                 sha256=",".join(sha(files[f"/mirror/ptb.{s}.txt"]) for s in texts))
    with pytest.raises(ValueError, match="data.size=7 applies to single-file datasets"):
      data.load_corpus(config(tmp_path, "ptb_word", url=server.url("/mirror/"), size=7))
    with pytest.raises(ValueError, match="3 sha256 hex"):
      data.load_corpus(config(tmp_path, "ptb_word", url=server.url("/mirror/"), sha256="ab"))
    with pytest.raises(ValueError, match="5,101,618"):  # The real ptb.train.txt's size.
      data.load_corpus(config(tmp_path / "x", "ptb_word", url=server.url("/mirror/")))
    corpus = data.load_corpus(cfg)
  v = corpus.vocab
  assert corpus.level == "word"
  # Most frequent first, ties alphabetical: <eos>, the (2 each), <unk>, cat, ran, sat (1 each).
  assert v.words == ["<eos>", "the", "<unk>", "cat", "ran", "sat"]
  assert [v.words[i] for i in corpus.train] == "the cat sat <eos> the <unk> ran <eos>".split()
  assert [v.words[i] for i in corpus.test] == ["<unk>", "<unk>", "<eos>"]
  assert v.decode(corpus.valid) == "the cat\n"


def test_ptb_char_tgz_layout(tmp_path):
  texts = {"train": "a e r _ b a n k\nn o t e\n", "valid": "b a r\n", "test": "z a p\n"}
  archive = tgz_bytes({f"./simple-examples/data/ptb.char.{s}.txt": t.encode()
                       for s, t in texts.items()} | {"./simple-examples/data/ptb.train.txt": b"x"})
  with testing.serve({"/simple-examples.tgz": archive}) as server:
    cfg = config(tmp_path, "ptb_char", url=server.url("/simple-examples.tgz"), size=len(archive))
    corpus = data.load_corpus(cfg)
  assert corpus.vocab.decode(corpus.train) == "aer bank\nnote\n"
  assert corpus.vocab.size == len(set("aer bank\nnote\n")) + 1
  assert corpus.vocab.decode(corpus.test) == "\ufffda\ufffd\n"  # z and p never occur in train.
  bad = tgz_bytes({f"simple-examples/data/ptb.char.{s}.txt": b"the cat\n" for s in texts})
  with testing.serve({"/simple-examples.tgz": bad}) as server:
    cfg = config(tmp_path / "w", "ptb_char", url=server.url("/simple-examples.tgz"), size=0)
    with pytest.raises(ValueError, match="token 'the'.*ptb_word"):
      data.load_corpus(cfg)


def test_tiny_shakespeare_from_local_folder(tmp_path):
  text = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 20
  (tmp_path / "input.txt").write_text(text)
  cfg = config(tmp_path, "tiny_shakespeare", path=str(tmp_path), sha256=sha(text.encode()),
               size=len(text.encode()))
  corpus = data.load_corpus(cfg)
  assert corpus.vocab.size == len(set(text))
  assert corpus.vocab.decode(np.concatenate([corpus.train, corpus.valid, corpus.test])) == text
  with pytest.raises(ValueError, match="86c4e6aa"):  # The real input.txt's sha256.
    data.load_corpus(config(tmp_path, "tiny_shakespeare", path=str(tmp_path), size=0))


@pytest.mark.parametrize("level", ["char", "byte", "word"])
def test_text_file_levels(tmp_path, level):
  text = "Hello world, 42 times.\nNaïve café.\n" * 30
  path = tmp_path / "my.txt"
  path.write_text(text, encoding="utf-8")
  corpus = data.load_corpus(config(tmp_path, "text_file", path=str(path), level=level))
  joined = np.concatenate([corpus.train, corpus.valid, corpus.test])
  assert corpus.level == level
  if level == "word":
    assert corpus.vocab.decode(joined) == text
    assert len(joined) == 30 * 8  # 6 words and 2 <eos> a repeat.
  else:
    assert corpus.vocab.decode(joined) == text
    assert len(joined) == (len(text) if level == "char" else len(text.encode()))
    assert len(corpus.valid) == round(0.05 * len(joined))


def test_text_file_text8_normalisation(tmp_path):
  path = tmp_path / "my.txt"
  path.write_text("It's 1984!\nÉcole.\n" * 50)
  corpus = data.load_corpus(config(tmp_path, "text_file", path=str(path), normalize="text8",
                                   split=(0.8, 0.1, 0.1)))
  assert corpus.vocab.size == 27
  assert corpus.vocab.decode(corpus.train).startswith("it s one nine eight four cole it s ")
  assert corpus.meta["sizes"]["valid"] == round(0.1 * sum(corpus.meta["sizes"].values()))


def test_bad_inputs(tmp_path):
  empty = tmp_path / "empty.txt"
  empty.write_bytes(b"")
  with pytest.raises(ValueError, match=f"{empty} is empty"):
    data.load_corpus(config(tmp_path, "text_file", path=str(empty)))
  latin = tmp_path / "latin1.txt"
  latin.write_bytes("café".encode("latin-1") * 10)
  with pytest.raises(ValueError, match="is not utf-8 text.*data.encoding"):
    data.load_corpus(config(tmp_path, "text_file", path=str(latin)))
  as_bytes = data.load_corpus(config(tmp_path, "text_file", path=str(latin), level="byte"))
  assert np.concatenate([as_bytes.train, as_bytes.valid, as_bytes.test]).tobytes() == \
      latin.read_bytes()  # The suggested fix works.
  missing = tmp_path / "nope.txt"
  with pytest.raises(FileNotFoundError, match="nope.txt' does not exist"):
    data.load_corpus(config(tmp_path, "text_file", path=str(missing)))
  with pytest.raises(ValueError, match="set data.path"):
    data.load_corpus(config(tmp_path, "text_file"))
  with pytest.raises(FileNotFoundError, match="holds none of text8.zip, text8"):
    data.load_corpus(config(tmp_path, "text8", path=str(tmp_path)))
  with pytest.raises(ValueError, match="'text9' is not a dataset"):
    data.load_corpus(config(tmp_path, "text9"))
  with pytest.raises(ValueError, match=r"unknown data config key\(s\) \['seqlen'\]"):
    data.load_corpus({"name": "pydoc", "seqlen": 3})
  with pytest.raises(ValueError, match="three positive fractions"):
    data.load_corpus(config(tmp_path, "pydoc", split=(0.9, 0.1, 0.1)))
  with pytest.raises(ValueError, match="normalize='text8' does not apply to enwik8"):
    data.load_corpus(config(tmp_path, "enwik8", normalize="text8"))
  with pytest.raises(ValueError, match="downloads nothing, so data.sha256 does not apply"):
    data.load_corpus(config(tmp_path, "text_file", path=str(latin), sha256=""))
  with pytest.raises(ValueError, match="downloads nothing, so data.path does not apply"):
    data.load_corpus(config(tmp_path, "pydoc", path=str(latin)))


def test_offline_load_names_url_and_cache_path(tmp_path):
  url = closed_port_url("/text8.zip")
  with pytest.raises(FileNotFoundError) as e:
    data.load_corpus(config(tmp_path, "text8", url=url))
  assert url in str(e.value) and str(tmp_path / "cache" / "text8" / "text8.zip") in str(e.value)


def test_pydoc_offline_corpus():
  corpus = data.load_corpus({"name": "pydoc"})
  n = sum(corpus.meta["sizes"].values())
  assert n > 1_000_000 and corpus.level == "char"
  assert corpus.vocab.decode(corpus.train[:10000]).count(" the ") > 20  # English prose.
  normalized = data.load_corpus({"name": "pydoc", "normalize": "text8"})
  assert normalized.vocab.size == 27
  assert max(int(a.max()) for a in (normalized.train, normalized.valid, normalized.test)) <= 26
