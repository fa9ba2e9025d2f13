"""inn_jax.nn.embed: the table's scale, tied and untied heads, and the head bias's start."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from inn_jax.nn import Embedder


def test_head_bias_starts_as_the_paper_codes_linear_layer():
  """init="normal" (paper code): bias ~ U(+-1/sqrt(D)) as torch's nn.Linear(D, V); ours: zero."""
  d, v = 256, 20_000  # Many draws, so the sample's range and moments pin the distribution.
  bias = np.asarray(Embedder(v, d, init="normal", rngs=nnx.Rngs(0)).bias_V[...])
  bound = 1 / 16
  assert np.abs(bias).max() <= bound and np.abs(bias).max() > 0.99 * bound
  assert abs(bias.mean()) < 3 * bound / np.sqrt(3 * v)  # Three standard errors of the mean.
  np.testing.assert_allclose(bias.std(), bound / np.sqrt(3), rtol=0.02)
  np.testing.assert_array_equal(Embedder(27, d, rngs=nnx.Rngs(0)).bias_V[...], 0.0)


@pytest.mark.parametrize("init,row_std", [("normal", 1.0), ("scaled", 1.0)])
def test_lookups_have_unit_scale(init, row_std):
  """Both inits give inputs of unit scale: N(0, 1) as is, or N(0, 1/D) times sqrt(D)."""
  e = Embedder(64, 512, init=init, rngs=nnx.Rngs(0))
  x = np.asarray(e.encode(jnp.arange(64)[None]))
  np.testing.assert_allclose(x.std(), row_std, rtol=0.02)


def test_tied_head_uses_the_table():
  e = Embedder(5, 8, init="normal", tie=True, rngs=nnx.Rngs(0))
  x = np.random.default_rng(0).normal(size=(1, 3, 8)).astype(np.float32)
  want = x @ np.asarray(e.table_VD[...]).T + np.asarray(e.bias_V[...])
  np.testing.assert_allclose(e.decode(jnp.asarray(x)), want, rtol=1e-5, atol=1e-5)
