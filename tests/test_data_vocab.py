"""Vocabularies: round trips, unknown symbols, dtypes, JSON."""

import numpy as np
import pytest

from inn_jax.data import vocab as vocab_lib


@pytest.mark.parametrize("text", ["hello world", "naïve café — 😀 ok"])
def test_char_round_trip(text):
  v = vocab_lib.CharVocab(sorted(set(text)))
  ids = v.encode(text)
  assert ids.dtype == np.uint8
  assert ids.tolist() == [sorted(set(text)).index(c) for c in text]
  assert v.decode(ids) == text


def test_char_outside_vocabulary_message():
  v = vocab_lib.CharVocab(vocab_lib.TEXT8_ALPHABET)
  with pytest.raises(vocab_lib.OutOfVocabularyError,
                     match=r"'H' \(U\+0048\) at position 0 is not in the 27-symbol vocabulary "
                           r"\(2 such characters") as e:
    v.encode("Hello World")
  assert (e.value.symbol, e.value.position, e.value.count) == ("H", 0, 2)
  with pytest.raises(ValueError, match=r"'é' \(U\+00E9\) at position 3"):
    v.encode("cafés")


def test_char_unknown_id():
  v = vocab_lib.CharVocab("ab", unk=True)
  assert v.size == 3 and v.unk_id == 2
  assert v.encode("abzа").tolist() == [0, 1, 2, 2]  # Latin z and Cyrillic а both unknown.
  assert v.decode([0, 2, 1]) == "a\ufffdb"


def test_decode_rejects_out_of_range_ids():
  with pytest.raises(ValueError, match="id 27 is outside the vocabulary of 27"):
    vocab_lib.CharVocab(vocab_lib.TEXT8_ALPHABET).decode([1, 27])
  with pytest.raises(ValueError, match="id -1 is outside"):
    vocab_lib.ByteVocab().decode(np.array([-1]))


def test_byte_round_trip():
  v = vocab_lib.ByteVocab()
  text = "Zürich € 1"
  ids = v.encode(text)
  assert ids.tolist() == list(text.encode("utf-8")) and v.size == 256
  assert v.decode(ids) == text


def test_word_round_trip_and_unknown():
  tokens = vocab_lib.split_words(" the cat \n the dog \n")
  assert tokens == ["the", "cat", "<eos>", "the", "dog", "<eos>"]
  v = vocab_lib.WordVocab.from_tokens(tokens)
  assert v.words == ["<eos>", "the", "cat", "dog", "<unk>"]
  assert v.decode(v.encode("the cat\nthe dog\n")) == "the cat\nthe dog\n"
  assert v.encode("the cow").tolist() == [1, 4]
  strict = vocab_lib.WordVocab(["a", "b"], unk=None)
  with pytest.raises(ValueError, match="word 'c' at token 1 is not in the 2-word vocabulary"):
    strict.encode("a c")


def test_dtypes():
  assert vocab_lib.id_dtype(256) == np.uint8
  assert vocab_lib.id_dtype(257) == np.uint16
  assert vocab_lib.id_dtype(65537) == np.int32
  v = vocab_lib.CharVocab([chr(0x4E00 + i) for i in range(300)])
  assert v.encode(chr(0x4E00 + 299)).tolist() == [299] and v.encode("").dtype == np.uint16


@pytest.mark.parametrize("v", [vocab_lib.CharVocab("ab\n", unk=True), vocab_lib.ByteVocab(),
                               vocab_lib.WordVocab(["<eos>", "x", "<unk>"])])
def test_json_round_trip(v):
  w = vocab_lib.from_json(v.to_json())
  assert type(w) is type(v) and w.size == v.size
  assert w.decode(np.arange(v.size)) == v.decode(np.arange(v.size))


def test_rejects_repeated_symbols():
  with pytest.raises(ValueError, match="distinct symbols"):
    vocab_lib.CharVocab("aba")


def test_every_vocabulary_has_a_length_its_ids_fill():
  """len(vocab) is its size: ids 0 .. len - 1 decode, len does not (issue 33)."""
  for vocab in (vocab_lib.CharVocab("abc "), vocab_lib.CharVocab("ab", unk=True),
                vocab_lib.ByteVocab(), vocab_lib.WordVocab(["the", "cat"])):
    assert len(vocab) == vocab.size
    vocab.decode(np.arange(len(vocab)))
    with pytest.raises(ValueError):
      vocab.decode(np.asarray([len(vocab)]))
