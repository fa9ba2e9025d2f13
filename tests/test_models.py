"""Every model from its config: shapes, causality, parameter counts, config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from inn_jax.models import MODELS, build_model, count_params, model_config

TINY = {
    "inn": dict(d_model=16, n_layers=2, n_neurons=4, n_heads=2, d_state=4, scan_chunk=4),
    "mamba": dict(d_model=16, n_layers=2, d_state=4, scan_chunk=4),
    "lstm": dict(n_layers=2, hidden=16),
    "transformer": dict(d_model=16, n_layers=2, n_heads=2, d_ff=32, max_len=64),
}


def test_every_kind_has_a_tiny_config():
  assert set(TINY) == set(MODELS)


@pytest.mark.parametrize("kind", sorted(TINY))
def test_build_and_run(kind):
  model = build_model(model_config(kind, **TINY[kind]), 27, nnx.Rngs(0))
  model.eval()
  logits = model(jnp.zeros((2, 9), jnp.int32))
  assert logits.shape == (2, 9, 27) and logits.dtype == jnp.float32
  assert np.isfinite(logits).all()


@pytest.mark.parametrize("kind", sorted(TINY))
def test_param_dtype_stores_the_float32_parameters_rounded(kind):
  """param_dtype="bfloat16" (issue 33): every parameter is stored in bfloat16, equal to the
  float32 model's rounded; with float32 compute it computes what that float32 model computes
  with its parameters rounded the same way; its gradients come back in bfloat16."""
  cfg = model_config(kind, **TINY[kind])
  half = build_model(model_config(kind, **TINY[kind], param_dtype="bfloat16"), 27, nnx.Rngs(0))
  full = build_model(cfg, 27, nnx.Rngs(0))
  half_params, full_params = nnx.state(half, nnx.Param), nnx.state(full, nnx.Param)
  leaves = jax.tree.leaves(half_params)
  assert leaves and all(x.dtype == jnp.bfloat16 for x in leaves)
  rounded = jax.tree.map(lambda x: x.astype(jnp.bfloat16).astype(jnp.float32), full_params)
  for got, want in zip(jax.tree.leaves(half_params), jax.tree.leaves(rounded)):
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want))
  nnx.update(full, rounded)
  x = jax.random.randint(jax.random.key(0), (2, 9), 0, 27)
  half.eval()
  full.eval()
  np.testing.assert_allclose(half(x), full(x), rtol=1e-5, atol=1e-5)
  grads = nnx.grad(lambda m: m(x).mean())(half)
  assert all(g.dtype == jnp.bfloat16 for g in jax.tree.leaves(grads))


INN_FORMS = [dict(neuron_identity=i, neuron_params=p) for i in ("embedding", "norm", "none")
             for p in ("shared", "ssm", "full")]
CAUSAL_CASES = [(k, {}) for k in sorted(TINY)] + [("inn", form) for form in INN_FORMS] + [
    ("inn", dict(scan_method=m)) for m in ("sequential", "associative")] + [
    ("inn", dict(communication="static")),
    ("inn", dict(norm="algorithm1", neuron_identity="embedding"))]


@pytest.mark.parametrize("kind,extra", CAUSAL_CASES)
def test_causality(kind, extra, monkeypatch):
  """d logits[:, t] / d inputs[:, s] is exactly zero for every s > t, and not for s <= t."""
  model = build_model(model_config(kind, **TINY[kind], **extra), 27, nnx.Rngs(0))
  model.eval()
  length, t = 10, 4
  x_BLD = jax.random.normal(jax.random.key(1), (2, length, model.embed.table_VD.shape[1]))
  tokens = jnp.zeros((2, length), jnp.int32)

  feed = {}  # The patched embedder returns the traced x; set outside the trace (NNX rule).
  monkeypatch.setattr(model.embed, "encode", lambda _: feed["x"])

  def logits_at_t(x):
    feed["x"] = x
    return model(tokens)[:, t].sum()

  g = np.asarray(jax.grad(logits_at_t)(x_BLD))
  assert np.all(g[:, t + 1:] == 0.0)
  assert np.all(np.abs(g[:, :t + 1]).sum(axis=(0, 2)) > 0)


def test_mamba_stack_parameter_count_matches_paper_code():
  cfg = model_config("mamba", tie_embeddings=True, embed_init="normal")
  assert count_params(build_model(cfg, 27, nnx.Rngs(0))) == 2_637_083


def test_unknown_option_is_named():
  with pytest.raises(ValueError, match=r"unknown options \['n_neuron'\]"):
    model_config("inn", n_neuron=3)
  cfg = model_config("mamba")
  cfg.n_neurons = 4
  with pytest.raises(ValueError, match=r"model \(mamba\): unknown options \['n_neurons'\]"):
    build_model(cfg, 27, nnx.Rngs(0))
  with pytest.raises(ValueError, match="model.kind='gru' is not one of"):
    model_config("gru")
