"""The attention graph's roles and degrees on hand-made matrices."""

import jax
import numpy as np
import pytest

from inn_jax import connectivity as conn


def planted(n=8, hub=3, specialist=5):
  """Every receiver gives 0.4 to `hub`, 0.02 to `specialist`, the rest evenly to the others."""
  a = np.full((n, n), (1 - 0.42) / (n - 2))
  a[:, hub], a[:, specialist] = 0.4, 0.02
  assert np.allclose(a.sum(1), 1)
  return a


def test_planted_hub_and_specialist():
  got = conn.roles(planted())
  # In-degrees by hand: 8 x 0.4 = 3.2, 8 x 0.02 = 0.16, 8 x 0.58 / 6 = 0.7733 (mean 1).
  np.testing.assert_allclose(got["in_degree"], [0.58 * 8 / 6] * 3 + [3.2, 0.58 * 8 / 6, 0.16]
                             + [0.58 * 8 / 6] * 2)
  assert got["hubs"] == [3] and got["specialists"] == [5]


def test_role_thresholds_are_inclusive_factors_of_the_mean():
  a = np.full((4, 4), 0.25)  # In-degrees below: 1.5, 0.6, 1.0, 0.9 (mean 1).
  a[:, 0], a[:, 1], a[:, 2], a[:, 3] = 0.375, 0.15, 0.25, 0.225
  got = conn.roles(a)
  assert got["hubs"] == [0] and got["specialists"] == [1]


def test_average_degree_counts_weights_above_the_uniform_share():
  rng = np.random.default_rng(0)
  a = rng.dirichlet(np.ones(6), size=6)
  edges = sum(a[n, m] > 1 / 6 for n in range(6) for m in range(6))
  assert conn.average_degree(a) == edges / 6
  assert conn.average_degree(a, edge_factor=0.5) == (a > 0.5 / 6).sum() / 6
  assert conn.average_degree(planted()) == 1.0  # Only the hub's column is above 1/8.


@pytest.mark.parametrize("n", [6, 8])
def test_uniform_attention_has_no_roles_and_no_edges(n):
  """Softmax of equal logits (1/6 is not a float: rounding must not make edges)."""
  a = np.asarray(jax.nn.softmax(np.zeros((2, 3, n, n), np.float32), -1))
  got = conn.summarize(a)
  assert got["uniform"] and got["overall"]["hubs"] == [] and got["overall"]["specialists"] == []
  assert all(l["average_degree"] == 0.0 and l["hubs"] == [] for l in got["layers"])
  if n == 8:
    assert got["max_deviation_from_uniform"] == 0.0


def test_summarize_per_layer_and_overall():
  uniform = np.full((8, 8), 1 / 8)
  a_LHNN = np.stack([np.stack([planted(hub=1, specialist=2)] * 2),
                     np.stack([planted(hub=6, specialist=0), uniform])])
  got = conn.summarize(a_LHNN)
  assert [l["hubs"] for l in got["layers"]] == [[1], [6]]
  assert [l["specialists"] for l in got["layers"]] == [[2], [0]]
  assert got["layers"][1]["average_degree_per_head"] == [1.0, 0.0]
  assert not got["uniform"] and got["n_neurons"] == 8
  np.testing.assert_allclose(got["overall"]["in_degree"], a_LHNN.mean((0, 1)).sum(0))


def test_attention_sum_weights_positions():
  w = np.random.default_rng(1).dirichlet(np.ones(4), size=(5, 2, 4)).astype(np.float32)
  mask = np.array([1, 0, 1, 1, 0], np.float32)
  np.testing.assert_allclose(conn.attention_sum(w, mask), w[[0, 2, 3]].sum(0), rtol=1e-6)
  np.testing.assert_allclose(conn.attention_sum(w), w.sum(0), rtol=1e-6)


@pytest.mark.parametrize("bad", [np.ones((3, 4)), np.ones(3)])
def test_bad_shapes(bad):
  with pytest.raises(ValueError, match="square"):
    conn.roles(bad)
  with pytest.raises(ValueError, match="layers, heads, N, N"):
    conn.summarize(bad)
