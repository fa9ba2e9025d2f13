"""Vocabularies for characters, bytes and words: ``encode(text) -> ids``, ``decode(ids) -> text``.

Ids come back in the smallest unsigned dtype that holds the vocabulary (uint8 up to 256 symbols,
uint16 up to 65,536, int32 beyond). ``to_json``/``from_json`` round-trip a vocabulary without
pickle, so a sampler can rebuild it from a checkpoint directory.
"""

from __future__ import annotations

import collections
import json

import numpy as np

TEXT8_ALPHABET = " abcdefghijklmnopqrstuvwxyz"  # Space is id 0, a..z are 1..26.
UNK_CHAR = "\ufffd"  # What decode() shows for the unknown-character id.
UNK_WORD = "<unk>"
EOS_WORD = "<eos>"


class OutOfVocabularyError(ValueError):
  """A symbol of the input is not in a vocabulary that has no unknown id."""

  def __init__(self, message, symbol, position, count):
    super().__init__(message)
    self.symbol, self.position, self.count = symbol, position, count


def id_dtype(size: int):
  """The smallest integer dtype that holds ids 0..size-1."""
  return np.uint8 if size <= 256 else np.uint16 if size <= 65536 else np.int32


def _describe(symbol) -> str:
  return f"{symbol!r} (U+{ord(symbol):04X})" if isinstance(symbol, str) and len(symbol) == 1 \
      else repr(symbol)


def _check_ids(ids, size):
  ids = np.asarray(ids).reshape(-1)
  if ids.size and not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f"decode() takes integer ids, got dtype {ids.dtype}.")
  if ids.size and (ids.min() < 0 or ids.max() >= size):
    raise ValueError(f"id {int(ids.max() if ids.max() >= size else ids.min())} is outside the "
                     f"vocabulary of {size} symbols (valid ids are 0..{size - 1}).")
  return ids


def _codepoints(text: str) -> np.ndarray:
  if text.isascii():  # One byte a character: a quarter of the memory of UTF-32 for text8.
    return np.frombuffer(text.encode("ascii"), np.uint8)
  return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)


class CharVocab:
  """One id per character; with ``unk=True`` one extra id (the last) for unseen characters."""

  level = "char"

  def __init__(self, symbols, unk: bool = False):
    symbols = "".join(symbols)
    if not symbols or len(set(symbols)) != len(symbols):
      raise ValueError(f"CharVocab needs distinct symbols, got {len(symbols)} with "
                       f"{len(symbols) - len(set(symbols))} repeated.")
    self.symbols, self.unk = symbols, bool(unk)
    self.size = len(symbols) + self.unk
    self.unk_id = len(symbols) if self.unk else None
    self.dtype = id_dtype(self.size)
    self._codes = np.array([ord(c) for c in symbols], np.int64)
    self._chars = np.array(list(symbols) + [UNK_CHAR] * self.unk)

  def encode(self, text: str) -> np.ndarray:
    codes = _codepoints(text)
    top = max(int(codes.max()) if codes.size else 0, int(self._codes.max())) + 1
    missing = self.size if self.unk_id is None else self.unk_id  # size never names a real symbol
    lut = np.full(top, missing, id_dtype(self.size + 1))
    lut[self._codes] = np.arange(len(self.symbols))
    ids = lut[codes]
    if self.unk_id is None:
      bad = np.flatnonzero(ids == missing)
      if bad.size:
        symbol = text[bad[0]]
        raise OutOfVocabularyError(
            f"character {_describe(symbol)} at position {bad[0]} is not in the "
            f"{self.size}-symbol vocabulary ({bad.size} such characters in the text); "
            f"remove or normalise those characters before encoding.", symbol, int(bad[0]), bad.size)
    return ids.astype(self.dtype, copy=False)

  def __len__(self) -> int:
    return self.size

  def decode(self, ids) -> str:
    return "".join(self._chars[_check_ids(ids, self.size)].tolist())

  def to_json(self) -> str:
    return json.dumps({"kind": "char", "symbols": self.symbols, "unk": self.unk})


class ByteVocab:
  """The 256 byte values; text is encoded as UTF-8."""

  level = "byte"
  size = 256
  dtype = np.uint8

  def encode(self, text) -> np.ndarray:
    data = text if isinstance(text, (bytes, bytearray)) else text.encode("utf-8")
    return np.frombuffer(data, np.uint8).copy()

  def __len__(self) -> int:
    return self.size

  def decode(self, ids) -> str:
    return bytes(_check_ids(ids, self.size).astype(np.uint8)).decode("utf-8", errors="replace")

  def to_json(self) -> str:
    return json.dumps({"kind": "byte"})


def split_words(text: str, eos: str = EOS_WORD) -> list[str]:
  """Whitespace tokens, with ``eos`` after every line that ends in a newline (PTB's convention)."""
  lines = text.split("\n")
  tokens = []
  for i, line in enumerate(lines):
    tokens.extend(line.split())
    if i < len(lines) - 1:
      tokens.append(eos)
  return tokens


class WordVocab:
  """One id per word; unseen words map to ``unk`` when the vocabulary holds it."""

  level = "word"

  def __init__(self, words, unk: str | None = UNK_WORD, eos: str = EOS_WORD):
    self.words = list(words)
    self.index = {w: i for i, w in enumerate(self.words)}
    if len(self.index) != len(self.words):
      raise ValueError("WordVocab needs distinct words.")
    self.unk, self.eos = unk, eos
    self.unk_id = self.index.get(unk) if unk is not None else None
    self.size = len(self.words)
    self.dtype = id_dtype(self.size)

  @classmethod
  def from_tokens(cls, tokens, unk: str = UNK_WORD, eos: str = EOS_WORD) -> "WordVocab":
    """Most frequent first, ties alphabetical; ``unk`` and ``eos`` always present."""
    counts = collections.Counter(tokens)
    for w in (unk, eos):
      counts.setdefault(w, 0)
    return cls(sorted(counts, key=lambda w: (-counts[w], w)), unk=unk, eos=eos)

  def encode_tokens(self, tokens) -> np.ndarray:
    get, unk_id = self.index.get, self.unk_id
    ids = [get(t, unk_id) for t in tokens]
    if unk_id is None and None in ids:
      pos = ids.index(None)
      raise OutOfVocabularyError(
          f"word {tokens[pos]!r} at token {pos} is not in the {self.size}-word vocabulary, which "
          f"has no unknown word.", tokens[pos], pos, ids.count(None))
    return np.array(ids, self.dtype)

  def encode(self, text: str) -> np.ndarray:
    return self.encode_tokens(split_words(text, self.eos))

  def __len__(self) -> int:
    return self.size

  def decode(self, ids) -> str:
    out = []
    for i in _check_ids(ids, self.size).tolist():
      word = self.words[i]
      out.append("\n" if word == self.eos else word if not out or out[-1] == "\n" else " " + word)
    return "".join(out)

  def to_json(self) -> str:
    return json.dumps({"kind": "word", "words": self.words, "unk": self.unk, "eos": self.eos})


def from_json(text: str):
  """Rebuilds a vocabulary written by ``to_json``."""
  d = json.loads(text)
  kind = d.get("kind")
  if kind == "char":
    return CharVocab(d["symbols"], unk=d["unk"])
  if kind == "byte":
    return ByteVocab()
  if kind == "word":
    return WordVocab(d["words"], unk=d["unk"], eos=d["eos"])
  raise ValueError(f"unknown vocabulary kind {kind!r}; expected 'char', 'byte' or 'word'.")
