"""text8 normalisation and the offline pydoc corpus (the shipped text: tests/test_corpus_pin.py)."""

from inn_jax.data import text as text_lib


def test_normalize_text8_by_hand():
  assert text_lib.normalize_text8("It's 1984!\n  Café au LAIT.") == \
      "it s one nine eight four caf au lait "
  assert text_lib.normalize_text8("a  b") == "a b"
  done = text_lib.normalize_text8("Hello, World 7")
  assert text_lib.normalize_text8(done) == done  # Idempotent.
  assert set(done) <= set(" abcdefghijklmnopqrstuvwxyz")


def test_pydoc_corpus_is_deterministic_english():
  text = text_lib.pydoc_text()
  assert text == text_lib.pydoc_text.__wrapped__()  # A fresh read gives the same text.
  assert text.startswith('The "assert" statement\n****')  # pydoc_data's first topic.
  assert len(text) > 1_000_000
  assert "Return the" in text and "Python" in text
