"""Corpora, downloads, vocabularies and batch streams (numpy only: no JAX, no TensorFlow).

    corpus = data.load_corpus(config.data)        # train/valid/test ids, vocab, level, meta
    data.validate(config.data, corpus)            # too-small splits etc., before model work
    stream = data.TrainStream(corpus.train, B, L, mode="contiguous", seed=0)
    x_BL, y_BL = stream.batch(step)
    for x_BL, y_BL, mask_BL in data.eval_batches(corpus.valid, B, L, carry_state=False): ...

Modules: config (keys and defaults), download (cache, atomic checked downloads), sources (local
paths, archives), corpora (registry, load_corpus), vocab, text (normalisation, the offline pydoc
corpus), batching; tfds_builders (the optional tfds extra:
TFDS datasets of the corpora, read with data.source='tfds'; not imported here).
"""

from inn_jax.data.batching import EvalBatches, TrainStream, eval_batches, validate
from inn_jax.data.config import default_data_config
from inn_jax.data.corpora import CORPORA, Corpus, from_arrays as corpus_from_arrays
from inn_jax.data.corpora import split_fractions
from inn_jax.data.loading import load_corpus
from inn_jax.data.download import cache_root
from inn_jax.data.text import normalize_text8, pydoc_text
from inn_jax.data.vocab import (TEXT8_ALPHABET, ByteVocab, CharVocab, OutOfVocabularyError,
                                WordVocab, from_json as vocab_from_json)

__all__ = [
    "CORPORA", "TEXT8_ALPHABET", "ByteVocab", "CharVocab", "Corpus", "EvalBatches",
    "corpus_from_arrays",
    "OutOfVocabularyError", "TrainStream", "WordVocab", "cache_root", "default_data_config",
    "eval_batches", "load_corpus", "normalize_text8", "pydoc_text", "split_fractions", "validate",
    "vocab_from_json",
]
