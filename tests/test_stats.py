"""inn_jax.stats against textbook values and direct computation; hubs found only where planted."""

import math

import numpy as np
import pytest

from inn_jax import stats

# Two-sided 95% critical values of Student's t (any statistics table).
T975 = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 10: 2.2281, 30: 2.0423}


@pytest.mark.parametrize("df,want", sorted(T975.items()))
def test_t_quantile_equals_the_table(df, want):
  assert stats.t_quantile(0.975, df) == pytest.approx(want, abs=1e-4)
  assert stats.t_quantile(0.025, df) == pytest.approx(-want, abs=1e-4)


def test_t_cdf_limits_and_symmetry():
  assert stats.t_cdf(0.0, 3) == pytest.approx(0.5)
  assert stats.t_cdf(1.0, 1) == pytest.approx(0.75)  # Cauchy: 1/2 + atan(1)/pi.
  assert stats.t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)  # The normal's.
  for t in (0.3, 1.7, 4.0):
    assert stats.t_cdf(t, 5) + stats.t_cdf(-t, 5) == pytest.approx(1.0)


def test_paired_interval_by_hand():
  a, b = {0: 2.00, 1: 2.10, 2: 2.05, 5: 9.0}, {0: 2.10, 1: 2.15, 2: 2.12, 3: 1.0}
  d = stats.paired(a, b)
  diffs = [-0.10, -0.05, -0.07]  # Seeds 0, 1, 2: the seeds both have.
  mean = sum(diffs) / 3
  sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / 2)
  half = 4.3027 * sd / math.sqrt(3)
  assert d["seeds"] == [0, 1, 2] and d["n"] == 3
  assert d["mean"] == pytest.approx(mean) and d["sd"] == pytest.approx(sd)
  assert d["lo"] == pytest.approx(mean - half, abs=1e-5)
  assert d["hi"] == pytest.approx(mean + half, abs=1e-5)
  assert stats.difference(d, 0.02) == "less"  # Interval below 0, |mean| 0.073 > 0.02.
  assert stats.difference(d, 0.08) == "tie"  # Beyond 0, but not by the minimum effect.
  one = stats.paired({0: 1.0}, {0: 2.0})
  assert one["lo"] is None and stats.difference(one, 0.02) == "n/a"
  assert stats.paired({0: 1.0}, {1: 2.0}) is None
  assert stats.difference(stats.paired({0: 1.0, 1: 1.5}, {0: 1.2, 1: 1.1}), 0.0) == "tie"


def test_summary():
  s = stats.summary([1.0, None, 3.0])
  assert (s["n"], s["mean"], s["sd"], s["min"], s["max"]) == (2, 2.0, math.sqrt(2), 1.0, 3.0)
  assert stats.summary([5.0])["sd"] is None and stats.summary([None]) is None


def _indegree(n_tokens, n, rng, boost=None):
  """Rows of N in-degrees summing to N (random attention); `boost` neuron's share raised."""
  w = rng.dirichlet(np.ones(n), size=(n_tokens, n))  # (T, receivers, senders)
  if boost is not None:
    for m, factor in boost.items():
      w[:, :, m] *= factor
    w /= w.sum(-1, keepdims=True)
  return w.sum(1)


def test_planted_hub_and_specialist_are_found_and_random_graphs_have_none():
  rng = np.random.default_rng(0)
  init = _indegree(4096, 8, rng)
  planted = _indegree(4096, 8, rng, boost={3: 3.0, 5: 0.2})
  got = stats.neuron_roles(planted, init, window=64, bootstrap=200, shuffles=50)
  assert got["hubs"] == [3] and got["specialists"] == [5]
  ratio = np.asarray(got["ratio"])
  np.testing.assert_allclose(ratio, planted.mean(0))
  assert ratio.mean() == pytest.approx(1.0)
  assert all(lo <= r <= hi for lo, r, hi in zip(got["lo"], got["ratio"], got["hi"]))
  plain = stats.neuron_roles(_indegree(4096, 8, rng), init, window=64, bootstrap=200,
                             shuffles=50)
  assert plain["hubs"] == [] and plain["specialists"] == []


def test_a_hub_at_initialisation_is_not_a_learned_hub():
  """The same structure before and after training: the init null's threshold absorbs it."""
  rng = np.random.default_rng(1)
  init = _indegree(2048, 4, rng, boost={0: 3.0})
  trained = _indegree(2048, 4, rng, boost={0: 3.0})
  got = stats.neuron_roles(trained, init, window=64, bootstrap=200, shuffles=50)
  assert got["ratio"][0] >= 1.5 and got["hubs"] == []
  assert got["hub_threshold"] == pytest.approx(got["null"]["init_max_q"])


def test_shuffle_null_by_hand():
  """The shuffled null's quantile from a direct loop with the same generator draws."""
  rng = np.random.default_rng(2)
  d = _indegree(256, 4, rng)
  got = stats.neuron_roles(d, d, window=32, bootstrap=10, shuffles=20, seed=7)
  g = np.random.default_rng(7)
  g.integers(8, size=(10, 8))  # The trained bootstrap's draw comes first.
  maxima = [g.permuted(d, axis=1).mean(0).max() for _ in range(20)]
  assert got["null"]["shuffled_max_q"] == pytest.approx(np.quantile(maxima, 0.95))
  with pytest.raises(ValueError, match="window"):
    stats.neuron_roles(d[:100], d[:100], window=32)
