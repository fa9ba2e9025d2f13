"""Tree comparisons for the numerical tests: chex.assert_trees_all_close with an absolute
tolerance in units of each leaf's own scale."""

import chex
import jax
import numpy as np


def assert_trees_close(got, want, *, rtol: float, scaled_atol: float, floor: float = 0.0):
  """Every leaf of `got` equals `want`'s (same tree structure) to within
  rtol * |want| + scaled_atol * max(max |want leaf|, floor), element by element: the atol of
  np.testing.assert_allclose(g, w, rtol, scaled_atol * scale) leaf by leaf, in one chex call.

  Both trees are divided by each leaf's scale (in float64, so exactly up to float64 rounding)
  and compared with chex.assert_trees_all_close(rtol=rtol, atol=scaled_atol); a failure names the
  leaf's path and reports its errors in units of that scale. With floor=0 a reference leaf that
  is all zero is refused (its tolerance would be zero and the test could not say much)."""
  chex.assert_trees_all_equal_structs(got, want)

  def scale(path, w):
    s = max(float(np.abs(np.asarray(w, np.float64)).max(initial=0.0)), floor)
    assert s > 0, (f"reference leaf {jax.tree_util.keystr(path)} is all zero: give a floor, or "
                   "compare it exactly")
    return s

  scales = jax.tree_util.tree_map_with_path(scale, want)
  divide = lambda x, s: np.asarray(x, np.float64) / s
  chex.assert_trees_all_close(jax.tree.map(divide, got, scales),
                              jax.tree.map(divide, want, scales), rtol=rtol, atol=scaled_atol)
