"""Training streams and evaluation batches against plain-Python references."""

import collections
import types

import numpy as np
import pytest

from inn_jax import data


def test_contiguous_stream_matches_python_reference():
  tokens = np.arange(103, dtype=np.uint16)  # Ids equal positions, so a batch shows its indices.
  stream = data.TrainStream(tokens, batch_size=4, seq_len=5)
  stream_len = (103 - 1) // 4  # 25 tokens a stream, 5 windows of 5 an epoch.
  assert stream.steps_per_epoch == 5
  for step in range(12):  # Over two epochs: wraps around.
    x, y = stream.batch(step)
    w = step % 5
    want_x = [[b * stream_len + w * 5 + t for t in range(5)] for b in range(4)]
    assert x.dtype == np.int32 and x.tolist() == want_x
    assert y.tolist() == [[v + 1 for v in row] for row in want_x]
  x0, _ = stream.batch(0)
  x1, _ = stream.batch(1)
  assert (x1[:, 0] == x0[:, -1] + 1).all()  # Row b of step k+1 continues row b of step k.


def test_contiguous_stream_seed_shifts_the_order_not_the_layout():
  """data.seed != 0 starts every stream at another window (the same shift for all rows): the
  same windows over an epoch, in a rotated order; seed 0 is the classic order above."""
  tokens = np.arange(403, dtype=np.uint16)
  classic = data.TrainStream(tokens, batch_size=4, seq_len=5)
  assert classic.shift == 0
  epoch = classic.steps_per_epoch  # 100 tokens a stream: 20 windows.
  orders = {}
  for seed in (1, 2, 3):
    stream = data.TrainStream(tokens, 4, 5, seed=seed)
    s = int(np.random.default_rng(seed).integers(epoch))  # The documented draw.
    assert stream.shift == s
    for step in range(2 * epoch):
      assert stream.batch(step)[0].tolist() == classic.batch((step + s) % epoch)[0].tolist()
    x0, x1 = stream.batch(0)[0], stream.batch(1)[0]
    if (s + 1) % epoch:  # Row b of step k+1 continues row b of step k within an epoch.
      assert (x1[:, 0] == x0[:, -1] + 1).all()
    orders[seed] = s
  assert len(set(orders.values())) > 1  # Seeds see the text in different orders.


@pytest.mark.parametrize("mode", ["contiguous", "random"])
def test_restart_at_step_k_gives_identical_batches(tmp_path, mode):
  path = tmp_path / "tokens.bin"
  np.random.default_rng(0).integers(0, 27, 5000).astype(np.uint8).tofile(path)
  tokens = np.memmap(path, np.uint8, mode="r")
  first = data.TrainStream(tokens, 3, 16, mode=mode, seed=7)
  run = [first.batch(s) for s in range(40)]
  resumed = data.TrainStream(np.memmap(path, np.uint8, mode="r"), 3, 16, mode=mode, seed=7)
  for s in range(25, 40):
    x, y = resumed.batch(s)
    assert np.array_equal(x, run[s][0]) and np.array_equal(y, run[s][1])


def test_random_stream_windows():
  tokens = np.arange(1000, dtype=np.int32)
  stream = data.TrainStream(tokens, 8, 10, mode="random", seed=3)
  assert stream.steps_per_epoch == 999 // 80
  x, y = stream.batch(5)
  assert (np.diff(x, axis=1) == 1).all() and (y == x + 1).all()  # Contiguous windows.
  assert x.min() >= 0 and y.max() <= 999
  assert not np.array_equal(x, stream.batch(6)[0])
  other_seed = data.TrainStream(tokens, 8, 10, mode="random", seed=4)
  assert not np.array_equal(x, other_seed.batch(5)[0])


def _scored(tokens, batch_size, seq_len, carry_state):
  """Counts, in plain Python, how often each target position is scored."""
  counts = collections.Counter()
  batches = list(data.eval_batches(tokens, batch_size, seq_len, carry_state=carry_state))
  for x, y, mask in batches:
    assert x.shape == y.shape == mask.shape == (batch_size, seq_len)
    for b in range(batch_size):
      for t in range(seq_len):
        if mask[b, t]:
          assert y[b, t] == x[b, t] + 1  # Target = the token after the input.
          counts[int(y[b, t])] += 1
  return counts, batches


@pytest.mark.parametrize("carry_state", [False, True])
@pytest.mark.parametrize("n,batch_size,seq_len", [(2, 1, 1), (50, 4, 7), (101, 3, 10),
                                                  (6, 8, 4), (33, 2, 16)])
def test_eval_scores_every_target_exactly_once(n, batch_size, seq_len, carry_state):
  tokens = np.arange(n, dtype=np.int32)
  counts, batches = _scored(tokens, batch_size, seq_len, carry_state)
  assert counts == collections.Counter(range(1, n))
  it = data.eval_batches(tokens, batch_size, seq_len, carry_state=carry_state)
  assert len(it) == len(batches) and it.num_targets == n - 1


def test_eval_carry_state_rows_continue():
  tokens = np.arange(200, dtype=np.int32)
  batches = list(data.eval_batches(tokens, 4, 8, carry_state=True))
  for (x0, y0, m0), (x1, _, m1) in zip(batches, batches[1:]):
    for b in range(4):
      if m1[b, 0]:  # The next window of row b starts where this one stopped.
        assert m0[b].all() and x1[b, 0] == y0[b, -1]


def test_eval_independent_windows_are_consecutive():
  tokens = np.arange(100, dtype=np.int32)
  x, y, mask = next(iter(data.eval_batches(tokens, 3, 10, carry_state=False)))
  assert x[:, 0].tolist() == [0, 10, 20] and mask.all()


def test_too_small_inputs():
  with pytest.raises(ValueError, match=r"has 40 tokens, too few for one contiguous batch of "
                                       r"batch_size=4 x seq_len=10 \(needs 41\)"):
    data.TrainStream(np.zeros(40, np.uint8), 4, 10)
  with pytest.raises(ValueError, match="at least 2 tokens"):
    data.eval_batches(np.zeros(1, np.uint8), 4, 10)
  with pytest.raises(ValueError, match="1-D integer array"):
    data.TrainStream(np.zeros((10, 10), np.float32), 1, 2)
  with pytest.raises(ValueError, match="stream mode 'shuffled'"):
    data.TrainStream(np.zeros(100, np.uint8), 1, 2, mode="shuffled")
  with pytest.raises(ValueError, match="step must be >= 0"):
    data.TrainStream(np.zeros(100, np.uint8), 1, 2).batch(-1)


def _corpus(n_train, n_valid, n_test, vocab_size=27):
  v = types.SimpleNamespace(size=vocab_size)
  return data.Corpus(np.zeros(n_train, np.uint8), np.zeros(n_valid, np.uint8),
                     np.zeros(n_test, np.uint8), v, "char", {"name": "toy"})


def test_validate_messages():
  cfg = data.default_data_config()
  cfg.batch_size, cfg.seq_len = 8, 32
  data.validate(cfg, _corpus(8 * 32 + 1, 2, 2))
  with pytest.raises(ValueError, match="train split of toy has 256 tokens.*lower data.batch_size"):
    data.validate(cfg, _corpus(256, 2, 2))
  cfg.stream = "random"
  data.validate(cfg, _corpus(40, 2, 2))  # Random windows need one window only.
  with pytest.raises(ValueError, match="the test split of toy has 1 tokens"):
    data.validate(cfg, _corpus(400, 10, 1))
  bad = _corpus(400, 10, 10)
  bad.valid[3] = 30
  with pytest.raises(ValueError, match="corpus.valid holds id 30, outside the vocabulary of 27"):
    data.validate(cfg, bad)
  cfg.seq_len = 0
  with pytest.raises(ValueError, match="data.seq_len must be a positive integer"):
    data.validate(cfg, bad)
