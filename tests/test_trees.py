"""tests.trees.assert_trees_close: the per-leaf scaled tolerance is np.testing's, at the edge."""

import numpy as np
import pytest

from tests.trees import assert_trees_close


def test_tolerance_is_in_each_leafs_own_scale():
  want = {"big": np.array([1.0, 100.0]), "small": np.array([1e-3, 2e-3])}
  # Within rtol * |want| + scaled_atol * max |leaf|: 1e-3 <= 1e-5 * 100 and 1.9e-8 <= 1e-5 * 2e-3.
  got = {"big": np.array([1.0 + 1e-3, 100.0]), "small": np.array([1e-3 + 1.9e-8, 2e-3])}
  assert_trees_close(got, want, rtol=0.0, scaled_atol=1e-5)
  np.testing.assert_allclose(got["small"], want["small"], rtol=0.0, atol=1e-5 * 2e-3)
  got["small"][0] += 2e-9  # Now 2.1e-8 > 2e-8: np.testing's leaf-by-leaf answer, and chex's.
  with pytest.raises(AssertionError):
    np.testing.assert_allclose(got["small"], want["small"], rtol=0.0, atol=1e-5 * 2e-3)
  with pytest.raises(AssertionError, match="small"):
    assert_trees_close(got, want, rtol=0.0, scaled_atol=1e-5)


def test_zero_reference_and_other_structures_are_refused():
  with pytest.raises(AssertionError, match=r"\['a'\] is all zero"):
    assert_trees_close({"a": np.zeros(2)}, {"a": np.zeros(2)}, rtol=0.0, scaled_atol=1e-5)
  assert_trees_close({"a": np.zeros(2)}, {"a": np.zeros(2)}, rtol=0.0, scaled_atol=1e-5,
                     floor=1e-6)
  with pytest.raises(AssertionError):
    assert_trees_close({"a": np.ones(2)}, {"b": np.ones(2)}, rtol=0.0, scaled_atol=1e-5)
