"""`load_corpus`: the native loader (corpora) or, with data.source='tfds', a prepared TFDS
dataset (tfds_builders, the optional extra, imported only then). Imports run one way:
loading -> tfds_builders -> corpora."""

from __future__ import annotations

from inn_jax.data import corpora


def _read_tfds(cfg):
  from inn_jax.data import tfds_builders  # The optional extra: imported only when asked for.
  return tfds_builders.read(cfg)


def load_corpus(cfg) -> corpora.Corpus:
  """The corpus config.data names (corpora.load's contract, TFDS datasets included)."""
  return corpora.load(cfg, _read_tfds)
