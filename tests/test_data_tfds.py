"""inn_jax/data/tfds_builders.py and data.source='tfds': each builder, fed tiny files laid out like
the real downloads from a 127.0.0.1 server, writes a TFDS dataset whose ids, read back through
tfds.data_source by the trainer's loader, are the native loader's, split by split; a tiny training
step reads it. Needs the tfds extra (pip install -e ".[tfds]"); CI installs it."""

import io
import json
import pathlib
import shlex
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import pytest

tfds = pytest.importorskip(
    "tensorflow_datasets", reason="tensorflow_datasets is not installed (the tfds extra): "
    "pip install -e \".[tfds]\" or pip install -r requirements-extras.txt")
pytest.importorskip("array_record", reason="array_record is not installed (the tfds extra): "
                    "pip install -e \".[tfds]\"")

from inn_jax import data  # noqa: E402
from inn_jax.data import corpora, tfds_builders  # noqa: E402
from tests import data_testing as testing

FAKE = testing.fake_downloads()
CHUNK = 64  # Ids a record here: several records a split, the last one shorter.
VARIANTS = [(name, "none") for name in corpora.TFDS_DATASETS] + [("wikitext2_char", "text8")]


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch, tmp_path):
  # TFDS makes an empty tempfile.mkdtemp("tfds") for each builder it first prepares
  # (DatasetInfo.initialize_from_bucket) and never removes it: keep those under tmp_path.
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
  monkeypatch.setenv("TMPDIR", str(tmp_path))
  for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv("no_proxy", "127.0.0.1")


@pytest.fixture(scope="module")
def server():
  with testing.serve({k: v for files in FAKE.values() for k, v in files.items()}) as s:
    yield s


@pytest.fixture
def small_records(monkeypatch):
  monkeypatch.setattr(tfds_builders, "CHUNK", CHUNK)


def native(tmp_path, server, name, **overrides):
  return data.load_corpus({"name": name, "cache_dir": str(tmp_path / "cache"),
                           **testing.mirror(name, FAKE[name], server), **overrides})


def from_tfds(tmp_path, name, **overrides):
  return data.load_corpus({"name": name, "source": "tfds",
                           "tfds_data_dir": str(tmp_path / "tfds"), **overrides})


def prepare(tmp_path, server, name, normalize="none"):
  return tfds_builders.prepare(name, str(tmp_path / "tfds"), normalize,
                               cache_dir=str(tmp_path / "cache"),
                               **testing.mirror(name, FAKE[name], server))


def assert_same_corpus(got, want):
  assert got.vocab.to_json() == want.vocab.to_json() and got.level == want.level
  for split in corpora.SPLITS:
    a, b = getattr(got, split), getattr(want, split)
    assert a.dtype == b.dtype and np.array_equal(a, b), split
  assert got.meta["sizes"] == want.meta["sizes"]


def test_the_builders_are_the_tfds_datasets_and_clash_with_no_catalog_name():
  assert sorted(tfds_builders.BUILDERS) == sorted(corpora.TFDS_DATASETS)
  package = pathlib.Path(tfds.__file__).parent
  catalog = {p.name for p in (package / "datasets").iterdir() if p.is_dir()}
  catalog |= {p.stem for sub in package.iterdir() if sub.is_dir() for p in sub.glob("*.py")}
  assert "tiny_shakespeare" in catalog and not catalog & set(tfds_builders.BUILDERS)


@pytest.mark.parametrize("name,normalize", VARIANTS)
def test_tfds_ids_equal_the_native_loaders(tmp_path, server, small_records, name, normalize):
  where = pathlib.Path(prepare(tmp_path, server, name, normalize))
  assert where == tmp_path / "tfds" / tfds_builders.tfds_name(name, normalize) / "1.0.0"
  want = native(tmp_path, server, name, normalize=normalize)
  got = from_tfds(tmp_path, name, normalize=normalize)
  assert_same_corpus(got, want)
  assert got.meta["source"][0].startswith(f"tfds:{tfds_builders.tfds_name(name, normalize)} in ")
  assert got.meta["source"][1:] == want.meta["source"]
  assert got.meta["sha256"] == want.meta["sha256"] and got.meta["tokens_cache"] is None
  # On disk: array_record, in order, CHUNK ids a record and a shorter last one, the vocabulary
  # in the metadata.
  builder = tfds.builder(tfds_builders.tfds_name(name, normalize), data_dir=str(tmp_path / "tfds"))
  info = builder.info
  assert info.file_format.value == "array_record" and info.disable_shuffling
  assert data.vocab_from_json(json.dumps(info.metadata["vocab"])).to_json() == want.vocab.to_json()
  sources = tfds.data_source(tfds_builders.tfds_name(name, normalize),
                             data_dir=str(tmp_path / "tfds"), download=False)
  assert sorted(sources) == ["test", "train", "validation"]
  for split, tfds_split in tfds_builders.TFDS_SPLITS.items():
    records = [sources[tfds_split][i]["ids"] for i in range(len(sources[tfds_split]))]
    n = len(getattr(want, split))
    assert [len(r) for r in records] == [CHUNK] * (n // CHUNK) + [n % CHUNK] * (n % CHUNK > 0)
    assert np.array_equal(np.concatenate(records), getattr(want, split))


def test_text8_ids_and_other_fractions(tmp_path, server, small_records):
  prepare(tmp_path, server, "text8")
  text = FAKE["text8"]["/text8.zip"]
  got = from_tfds(tmp_path, "text8")
  whole = np.concatenate([got.train, got.valid, got.test])
  letters = zipfile.ZipFile(io.BytesIO(text)).read("text8").decode()
  assert whole.tolist() == [" abcdefghijklmnopqrstuvwxyz".index(c) for c in letters]
  assert len(got.train) == 2700 and len(got.valid) == 150
  # data.split and data.max_chars apply to the prepared dataset as to the native one.
  options = dict(split=(0.7, 0.2, 0.1), max_chars=1000)
  assert_same_corpus(from_tfds(tmp_path, "text8", **options),
                     native(tmp_path, server, "text8", **options))


def _manual_text8(folder):
  """A manual dir holding an extracted text8 unlike the served one (which one was read shows)."""
  folder.mkdir()
  text = zipfile.ZipFile(io.BytesIO(FAKE["text8"]["/text8.zip"])).read("text8")
  (folder / "text8").write_bytes(text[:2000])
  return folder


def test_manual_dir_is_data_path_when_it_holds_the_datasets_file(tmp_path, server, small_records):
  manual = _manual_text8(tmp_path / "manual")
  config = tfds.download.DownloadConfig(manual_dir=str(manual))
  tfds.builder("text8", data_dir=str(tmp_path / "tfds")).download_and_prepare(
      download_config=config)
  want = data.load_corpus({"name": "text8", "path": str(manual)})
  assert len(want.train) == 1800
  assert_same_corpus(from_tfds(tmp_path, "text8"), want)
  # A manual dir holding other files is not this dataset's: the download is used.
  other = tmp_path / "other"
  other.mkdir()
  (other / "notes.txt").write_text("another dataset's file")
  builder = tfds.builder("text8", data_dir=str(tmp_path / "tfds2"), data_config={
      "cache_dir": str(tmp_path / "cache"), **testing.mirror("text8", FAKE["text8"], server)})
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(other)))
  assert_same_corpus(from_tfds(tmp_path, "text8", tfds_data_dir=str(tmp_path / "tfds2")),
                     native(tmp_path, server, "text8"))


def test_tfds_build_command(tmp_path):
  """The README's `tfds build` (TFDS's own command line) on a manual dir, as a user runs it."""
  _tensorflow("TFDS's command line (tfds build) imports it")
  for module, package in (("apache_beam", "apache-beam"), ("mlcroissant", "mlcroissant")):
    pytest.importorskip(module, reason=f"{package} is not installed: TFDS 4.9.10's command line "
                        f"(tfds build) imports it; pip install {package} to run this test.")
  manual = _manual_text8(tmp_path / "manual")
  cmd = [sys.executable, "-m", "tensorflow_datasets.scripts.cli.main", "build", "--imports",
         "inn_jax.data.tfds_builders", "text8", "--data_dir", str(tmp_path / "tfds"),
         "--manual_dir", str(manual)]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert_same_corpus(from_tfds(tmp_path, "text8"),
                     data.load_corpus({"name": "text8", "path": str(manual)}))


def test_not_prepared_names_the_command_that_prepares(tmp_path, server, capsys):
  with pytest.raises(FileNotFoundError) as e:
    from_tfds(tmp_path, "ptb_char")
  message = str(e.value)
  assert len(message.splitlines()) == 1 and "data.source='native'" in message
  command = message.split("prepare it with: ")[1].split(" (")[0]
  argv = shlex.split(command)
  assert argv[:3] == ["python", "-m", "inn_jax.data.tfds_builders"]
  mirror = testing.mirror("ptb_char", FAKE["ptb_char"], server)
  assert tfds_builders.main(argv[3:] + ["--cache_dir", str(tmp_path / "cache"),
                                        *(f"--{k}={v}" for k, v in mirror.items())]) == 0
  assert "ptb_char: prepared in" in capsys.readouterr().out
  assert_same_corpus(from_tfds(tmp_path, "ptb_char"), native(tmp_path, server, "ptb_char"))
  # A user error of the command: one line, exit status 2.
  assert tfds_builders.main(["ptb_char", "--data_dir", str(tmp_path / "t2"), "--url",
                             server.url("/nothing.tgz"), "--size", "0"]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and len(err.splitlines()) == 1 and "HTTP 404" in err


def test_damaged_or_foreign_dataset_is_refused(tmp_path, server):
  where = pathlib.Path(prepare(tmp_path, server, "enwik8"))
  meta_path = where / "metadata.json"
  meta = json.loads(meta_path.read_text())
  meta["ids_sha256"]["valid"] = "0" * 64
  meta_path.write_text(json.dumps(meta))
  with pytest.raises(ValueError, match="validation split .* is damaged; prepare it again"):
    from_tfds(tmp_path, "enwik8")
  meta["format"] = 0
  meta_path.write_text(json.dumps(meta))
  with pytest.raises(ValueError, match="not written by this version"):
    from_tfds(tmp_path, "enwik8")


def test_config_errors(tmp_path, monkeypatch):
  cases = [
      ({"name": "text8", "source": "hub"}, r"data.source='hub' is not one of \('native', 'tfds'\)"),
      ({"name": "text8", "tfds_data_dir": "/x"}, "applies only with data.source='tfds'"),
      ({"name": "tiny_shakespeare", "source": "tfds"}, "has no TFDS builder"),
      ({"name": "text8", "source": "tfds", "url": "http://x/"}, "data.url does not apply"),
  ]
  for cfg, message in cases:
    with pytest.raises(ValueError, match=message) as e:
      data.load_corpus(cfg)
    assert len(str(e.value).splitlines()) == 1
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # As if not installed.
  with pytest.raises(ValueError, match=r'not installed: tensorflow_datasets\): pip install -e '
                     r'"\.\[tfds\]"'):
    data.load_corpus({"name": "text8", "source": "tfds"})


def test_trainer_step_on_a_tfds_dataset(tmp_path, server):
  from inn_jax.train import runner
  from tests import tiny as train_testing
  from inn_jax.train import workdir as workdir_lib
  text = testing.zip_bytes({"text8": train_testing.write_corpus(tmp_path / "t.txt").read_text()})
  files = {"/tiny/text8.zip": text}
  with testing.serve(files) as tiny:
    mirror = testing.mirror("text8", files, tiny)
    tfds_builders.prepare("text8", str(tmp_path / "tfds"), cache_dir=str(tmp_path / "cache"),
                          **mirror)
    want = data.load_corpus({"name": "text8", "cache_dir": str(tmp_path / "cache"), **mirror})
  config = train_testing.tiny_config(tmp_path, "lstm", steps=1)  # The fastest to compile.
  config.eval.update(carry_state="no", splits=("valid",))
  config.mesh.data = 1
  config.data.update(name="text8", path=None, source="tfds", tfds_data_dir=str(tmp_path / "tfds"))
  runner.train(config)
  saved = json.loads((tmp_path / "workdir" / "config.json").read_text())
  assert saved["data"]["source"] == "tfds"
  assert saved["resolved"][workdir_lib.CORPUS_KEY] == workdir_lib.corpus_sha256(want)
  rows = [json.loads(r) for r in (tmp_path / "workdir" / "metrics.jsonl").read_text().split("\n")
          if r]
  assert [r["step"] for r in rows if r["split"] == "train"] == [1]
  assert all(np.isfinite(r.get("loss", r.get("nats", 0.0))) for r in rows)


def _tensorflow(why="TFDS's catalog builders (tiny_shakespeare) need it"):
  try:
    import tensorflow  # noqa: F401
  except ImportError:
    pytest.skip(f"TensorFlow is not installed: {why}; pip install tensorflow (~2 GB) in this "
                "environment to run this test.")


def test_catalog_tiny_shakespeare_through_tfds(tmp_path):
  """TFDS's own tiny_shakespeare builder on a stand-in input.txt placed in its download cache as
  an earlier download (TFDS then skips the network), against the native loader on that file."""
  _tensorflow()
  from etils import epath
  from tensorflow_datasets.core.download import checksums, resource
  text = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak.\n" * 30
  url = ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/"
         "input.txt")
  info = checksums.load_url_infos(
      pathlib.Path(tfds.__file__).parent / "datasets" / "tiny_shakespeare" / "checksums.tsv")[url]
  cached = tmp_path / "downloads" / "tiny_shakespeare" / resource.get_dl_fname(url, info.checksum)
  cached.parent.mkdir(parents=True)
  cached.write_text(text)
  resource.write_info_file(url=url, path=epath.Path(cached), dataset_name="tiny_shakespeare",
                           original_fname="input.txt", url_info=info)
  builder = tfds.builder("tiny_shakespeare", data_dir=str(tmp_path / "tfds"),
                         file_format="array_record")
  builder.download_and_prepare(download_dir=str(tmp_path / "downloads"))
  sources = tfds.data_source("tiny_shakespeare", data_dir=str(tmp_path / "tfds"), download=False)
  parts = [sources[s][0]["text"] for s in ("train", "validation", "test")]
  parts = [p.decode() if isinstance(p, bytes) else p for p in parts]
  assert "".join(parts) == text and len(parts[0]) == int(len(text) * 0.9)
  (tmp_path / "input.txt").write_text(text)
  corpus = data.load_corpus({"name": "tiny_shakespeare", "path": str(tmp_path / "input.txt"),
                             "sha256": "", "size": 0})
  ids = np.concatenate([corpus.train, corpus.valid, corpus.test])
  assert np.array_equal(ids, corpus.vocab.encode("".join(parts)))
