"""Activation statistics and neuron diversity against hand counts and NumPy references."""

import numpy as np
import pytest

from inn_jax import activations as act


def test_sparsity_equals_a_hand_count():
  a_BNL = np.array([[[0.05, -0.09, 0.1, 0.5, -0.2],  # |a| < 0.1: 2 of 5 (0.1 itself is not).
                     [0.0, 0.01, -1.0, 0.099, 0.3]]], np.float32)  # 3 of 5.
  stats = act.activation_stats(act.merge_moments(None, act.moments(a_BNL)))
  np.testing.assert_allclose(stats["sparsity"], [0.4, 0.6])
  assert stats["sparsity_all"] == pytest.approx(0.5)


def test_moments_over_masked_batches_equal_numpy():
  rng = np.random.default_rng(0)
  batches = [rng.normal(0.3 * i, 1 + i, size=(3, 4, 6)).astype(np.float32) for i in range(3)]
  masks = [np.array([1, 1, 1]), np.array([1, 0, 1]), np.array([1, 0, 0])]
  acc = None
  for a, m in zip(batches, masks):
    acc = act.merge_moments(acc, act.moments(a, m.astype(np.float32)))
  kept = np.concatenate([a[m.astype(bool)] for a, m in zip(batches, masks)]).astype(np.float64)
  ref_N = kept.transpose(1, 0, 2).reshape(4, -1)  # Neuron x (rows, tokens).
  stats = act.activation_stats(acc)
  assert acc["count"] == ref_N.shape[1]
  np.testing.assert_allclose(stats["mean"], ref_N.mean(1), rtol=1e-5)
  np.testing.assert_allclose(stats["variance"], ref_N.var(1), rtol=1e-5)
  np.testing.assert_allclose(stats["sparsity"], (np.abs(ref_N) < 0.1).mean(1))
  assert stats["highest_mean_neuron"] == int(ref_N.mean(1).argmax())
  assert stats["lowest_mean_neuron"] == int(ref_N.mean(1).argmin())


def test_high_variance_neurons():
  a = np.zeros((1, 4, 8), np.float32)
  a[0, 2] = np.tile([1.0, -1.0], 4)  # Variance 1; the others 0; mean variance 0.25.
  assert act.activation_stats(act.merge_moments(None, act.moments(a)))["high_variance_neurons"] \
      == [2]


def test_neuron_activation_reductions():
  h = np.random.default_rng(1).normal(size=(2, 3, 4, 5)).astype(np.float32)
  np.testing.assert_allclose(act.neuron_activation(h), h.mean(-1), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(act.neuron_activation(h, "rms"), np.sqrt((h ** 2).mean(-1)),
                             rtol=1e-6)
  with pytest.raises(ValueError, match="reduce='max' is not one of"):
    act.neuron_activation(h, "max")


def test_diversity_is_exactly_zero_for_copies():
  """Three copies (3 is not a power of two, so a plain mean over neurons would round)."""
  h = np.random.default_rng(2).normal(size=(2, 1, 7, 5)).astype(np.float32) * 3.7
  between, total = act.diversity_sums(np.repeat(h, 3, axis=1))
  assert float(between) == 0.0 and float(total) > 0
  assert act.diversity(between, total) == 0.0


def test_diversity_matches_numpy():
  h = np.random.default_rng(3).normal(0.5, 1, size=(3, 4, 6, 5)).astype(np.float32)
  w = np.array([1, 0, 1], np.float32)
  between, total = act.diversity_sums(h, w)
  ref = h[[0, 2]].astype(np.float64)
  want_between = ((ref - ref.mean(1, keepdims=True)) ** 2).sum()
  np.testing.assert_allclose(float(between), want_between, rtol=1e-5)
  np.testing.assert_allclose(float(total), (ref ** 2).sum(), rtol=1e-5)
  assert 0 < act.diversity(between, total) < 1


def test_population_code_is_row_zero():
  a = np.arange(2 * 3 * 10, dtype=np.float32).reshape(2, 3, 10)
  np.testing.assert_array_equal(act.population_code(a, 4), a[0, :, :4])
