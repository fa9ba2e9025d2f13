"""Batches of (inputs, targets) from a 1-D token array, in numpy; the trainer puts them on devices.

Training: ``TrainStream.batch(step)`` is a pure function of the step, so a run resumed at step k
sees the batches it would have seen. "contiguous" is the classic layout: the tokens are cut into B
equal streams and step k takes window k + s (mod steps_per_epoch) of every stream, so row b of step
k+1 continues row b of step k; the shift s is 0 for seed 0 (every stream from its first window) and
a seeded draw in [0, steps_per_epoch) otherwise, so that seeds see the text in different orders.
"random" draws B windows uniformly, seeded by (seed, step).

Evaluation: ``eval_batches`` scores every target token (tokens[1:]) exactly once, in fixed (B, L)
shapes with a mask over the padding. ``carry_state=True`` cuts the targets into B contiguous streams
so that row b of window w+1 continues row b of window w (a recurrent model carries its state);
``carry_state=False`` cuts them into independent windows of L.
"""

from __future__ import annotations

import numpy as np

from inn_jax.data import config as config_lib

MODES = ("contiguous", "random")


def _check_tokens(tokens, what="tokens"):
  if getattr(tokens, "ndim", None) != 1 or not np.issubdtype(tokens.dtype, np.integer):
    shape, dtype = getattr(tokens, "shape", type(tokens)), getattr(tokens, "dtype", "?")
    raise ValueError(f"{what} must be a 1-D integer array, got {shape} of {dtype}.")


def _check_positive(name, value):
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def check_train_size(n_tokens: int, batch_size: int, seq_len: int, mode: str = "contiguous",
                     what: str = "the train split"):
  """Raises ValueError when ``n_tokens`` cannot fill one training step."""
  if mode not in MODES:
    raise ValueError(f"stream mode {mode!r} is not one of {MODES}.")
  _check_positive("batch_size", batch_size)
  _check_positive("seq_len", seq_len)
  need = batch_size * seq_len + 1 if mode == "contiguous" else seq_len + 1
  if n_tokens < need:
    raise ValueError(
        f"{what} has {n_tokens:,} tokens, too few for one {mode} batch of "
        f"batch_size={batch_size} x seq_len={seq_len} (needs {need:,}); lower data.batch_size or "
        f"data.seq_len, or use more data (data.max_chars, data.split).")


def _gather(tokens, starts_B, lengths_B, seq_len):
  """Inputs, targets (int32) and mask of windows tokens[s : s+L] -> tokens[s+1 : s+L+1]."""
  pos_BL = starts_B[:, None] + np.arange(seq_len)
  mask_BL = np.arange(seq_len) < lengths_B[:, None]
  last = len(tokens) - 1
  x_BL = np.where(mask_BL, np.asarray(tokens[np.minimum(pos_BL, last)]), 0).astype(np.int32)
  y_BL = np.where(mask_BL, np.asarray(tokens[np.minimum(pos_BL + 1, last)]), 0).astype(np.int32)
  return x_BL, y_BL, mask_BL


class TrainStream:
  """Deterministic, resumable training batches: ``x_BL, y_BL = stream.batch(step)``."""

  def __init__(self, tokens, batch_size: int, seq_len: int, mode: str = "contiguous",
               seed: int = 0):
    _check_tokens(tokens)
    check_train_size(len(tokens), batch_size, seq_len, mode)
    self.tokens, self.batch_size, self.seq_len = tokens, int(batch_size), int(seq_len)
    self.mode, self.seed = mode, int(seed)
    n_targets = len(tokens) - 1
    self.stream_len = n_targets // self.batch_size  # Tokens of each contiguous stream.
    if mode == "contiguous":
      self.steps_per_epoch = self.stream_len // self.seq_len
      # Seed 0 keeps the classic order; other seeds start every stream at another window.
      self.shift = (0 if self.seed == 0 else
                    int(np.random.default_rng(self.seed).integers(self.steps_per_epoch)))
    else:  # As many windows as the split has tokens, on average.
      self.steps_per_epoch = max(1, n_targets // (self.batch_size * self.seq_len))

  def starts(self, step: int) -> np.ndarray:
    """First input position of each row at ``step``."""
    if step < 0:
      raise ValueError(f"step must be >= 0, got {step}.")
    if self.mode == "contiguous":
      window = (step + self.shift) % self.steps_per_epoch
      return np.arange(self.batch_size) * self.stream_len + window * self.seq_len
    rng = np.random.default_rng([self.seed, step])
    return rng.integers(0, len(self.tokens) - self.seq_len, size=self.batch_size)

  def batch(self, step: int):
    """(x_BL, y_BL) int32 with y the next token of x."""
    lengths_B = np.full(self.batch_size, self.seq_len)
    x_BL, y_BL, _ = _gather(self.tokens, self.starts(step), lengths_B, self.seq_len)
    return x_BL, y_BL


def eval_batches(tokens, batch_size: int, seq_len: int, carry_state: bool = False):
  """Fixed-shape (x_BL, y_BL, mask_BL) batches that score every target of ``tokens`` exactly once.

  Returns an ``EvalBatches``: iterate it for the batches (int32, int32, bool mask False on padding);
  ``len()`` is the number of batches and ``num_targets`` the number of scored tokens.
  """
  return EvalBatches(tokens, batch_size, seq_len, carry_state)


class EvalBatches:
  """The batches of ``eval_batches``; iterable any number of times."""

  def __init__(self, tokens, batch_size: int, seq_len: int, carry_state: bool = False):
    _check_tokens(tokens)
    if len(tokens) < 2:
      raise ValueError(f"evaluation needs at least 2 tokens (one target), got {len(tokens)}.")
    _check_positive("batch_size", batch_size)
    _check_positive("seq_len", seq_len)
    self.tokens, self.batch_size, self.seq_len = tokens, int(batch_size), int(seq_len)
    self.carry_state = bool(carry_state)
    self.num_targets = n = len(tokens) - 1
    if self.carry_state:  # B streams, lengths differing by at most one.
      q, r = divmod(n, self.batch_size)
      self.stream_lengths = np.array([q + 1] * r + [q] * (self.batch_size - r))
      self.stream_starts = np.concatenate([[0], np.cumsum(self.stream_lengths)[:-1]])
      self._len = -(-int(self.stream_lengths.max()) // self.seq_len)
    else:
      self.num_windows = -(-n // self.seq_len)
      self._len = -(-self.num_windows // self.batch_size)

  def __len__(self):
    return self._len

  def __iter__(self):
    n, length = self.num_targets, self.seq_len
    for i in range(self._len):
      if self.carry_state:
        starts_B = self.stream_starts + i * length
        lengths_B = self.stream_lengths - i * length
      else:
        starts_B = (i * self.batch_size + np.arange(self.batch_size)) * length
        lengths_B = n - starts_B
      yield _gather(self.tokens, np.minimum(starts_B, n), np.clip(lengths_B, 0, length), length)


def validate(cfg, corpus):
  """Checks, before any model work, that ``corpus`` can feed the run ``cfg`` (config.data) sets.

  Raises ValueError naming the split and the fix: a train split too small for one batch, an empty
  valid or test split, or a vocabulary and arrays that disagree.
  """
  cfg = config_lib.resolve(cfg)
  name = corpus.meta.get("name", "the corpus")
  check_train_size(len(corpus.train), cfg.batch_size, cfg.seq_len, cfg.stream,
                   what=f"the train split of {name}")
  for split in ("valid", "test"):
    tokens = getattr(corpus, split)
    if len(tokens) < 2:
      raise ValueError(f"the {split} split of {name} has "
                       f"{len(tokens)} tokens; evaluation needs at least 2. Use more data or a "
                       f"larger data.split fraction for it.")
  for split in ("train", "valid", "test"):
    tokens = getattr(corpus, split)
    _check_tokens(tokens, f"corpus.{split}")
    if len(tokens) and int(tokens.max()) >= corpus.vocab.size:
      raise ValueError(f"corpus.{split} holds id {int(tokens.max())}, outside the vocabulary of "
                       f"{corpus.vocab.size}; the tokens cache is stale: delete "
                       f"{corpus.meta.get('tokens_cache')} and load again.")
