"""Transformer baseline: parameter formula, NumPy attention, causality, KV cache and dropout."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from inn_jax.models import build_model, count_params, model_config
from inn_jax.models.transformer import Attention, Transformer, sinusoid
from tests.build import make

V = 11


def transformer_count(vocab, d, n_layers, d_ff, tie):
  """Per layer: 2 LayerNorms (4D), fused QKV (3D^2 + 3D), out (D^2 + D), FFN (2DF + F + D)."""
  layer = 4 * d * d + 2 * d * d_ff + 9 * d + d_ff
  return vocab * d + (0 if tie else d * vocab) + vocab + n_layers * layer + 2 * d


def small(dropout=0.0, seed=0, **kw):
  model = make("transformer", V, d_model=8, n_layers=2, n_heads=2, d_ff=12, dropout=dropout,
               max_len=16, rngs=nnx.Rngs(seed), **kw)
  model.eval()
  return model


@pytest.mark.parametrize("tie", [True, False])
def test_parameter_count_matches_formula(tie):
  assert count_params(small(tie_embeddings=tie)) == transformer_count(V, 8, 2, 12, tie)


def test_paper_size_count():
  model = nnx.eval_shape(lambda: make("transformer", 27, rngs=nnx.Rngs(0)))
  assert count_params(model) == transformer_count(27, 256, 6, 1024, True) == 4_746_011


def test_sinusoid_matches_formula():
  d = 6
  want = np.zeros((5, d))
  for pos in range(5):
    for i in range(0, d, 2):
      want[pos, i] = math.sin(pos / 10000 ** (i / d))
      want[pos, i + 1] = math.cos(pos / 10000 ** (i / d))
  np.testing.assert_allclose(sinusoid(jnp.arange(5), d), want, atol=1e-6)


def test_attention_matches_numpy():
  d, heads, length = 8, 2, 5
  attn = Attention(d, heads, 0.0, dtype=jnp.float32, rngs=nnx.Rngs(0))
  x = np.asarray(jax.random.normal(jax.random.key(1), (2, length, d)), np.float64)
  got, _, _ = attn(jnp.asarray(x, jnp.float32), None, None, jnp.zeros((), jnp.int32))
  p = lambda m: (np.asarray(m.kernel[...], np.float64), np.asarray(m.bias[...], np.float64))
  (w_qkv, b_qkv), (w_out, b_out) = p(attn.qkv), p(attn.out)
  qkv = x @ w_qkv + b_qkv
  out = np.zeros_like(x)
  k_dim = d // heads
  for b in range(2):
    for h in range(heads):
      cols = lambda j: qkv[b, :, j * d + h * k_dim:j * d + (h + 1) * k_dim]
      q, k, v = cols(0), cols(1), cols(2)
      s = q @ k.T / math.sqrt(k_dim)
      s[np.triu_indices(length, 1)] = -np.inf
      w = np.exp(s - s.max(-1, keepdims=True))
      out[b, :, h * k_dim:(h + 1) * k_dim] = (w / w.sum(-1, keepdims=True)) @ v
  # float32 against float64 on O(1) values through two small matmuls: ~1e-6.
  np.testing.assert_allclose(got, out @ w_out + b_out, atol=1e-5, rtol=1e-5)


def test_causal(monkeypatch):
  model = small()
  length = 6
  x = jax.random.normal(jax.random.key(1), (1, length, 8))
  tokens = jnp.zeros((1, length), jnp.int32)
  # nnx forbids setting attributes under a JAX trace, so patch once and feed x through a box.
  box = {}
  monkeypatch.setattr(model.embed, "encode", lambda tokens_BL: box["x_BLD"])

  def logits(x_BLD):
    box["x_BLD"] = x_BLD
    return model(tokens)[0]

  jac_LVLD = np.asarray(jax.jacrev(logits)(x)[:, :, 0])
  for t in range(length):
    assert np.all(jac_LVLD[t, :, t + 1:] == 0.0), t
    assert np.all(np.abs(jac_LVLD[t, :, :t + 1]).sum(axis=(0, 2)) > 0), t


def test_cache_continues_exactly():
  model = small()
  tokens = jax.random.randint(jax.random.key(5), (2, 12), 0, V)
  full = model(tokens)
  first, cache = model(tokens[:, :5], return_cache=True)
  second, cache = model(tokens[:, 5:], cache=cache, return_cache=True)
  assert int(cache.pos) == 12
  cache, steps = model.init_cache(2), []
  for t in range(12):
    out, cache = model(tokens[:, t:t + 1], cache=cache, return_cache=True)
    steps.append(out)
  # The cached calls attend over all max_len slots (masked ones get weight exactly 0), so only
  # the summation order of the softmax and matmuls differs: float32 rounding, ~1e-6 on O(1) logits.
  np.testing.assert_allclose(jnp.concatenate([first, second], 1), full, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(jnp.concatenate(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_positions_matter():
  """A continued call is not the same tokens at positions 0.. (the counter is used)."""
  model = small()
  tokens = jax.random.randint(jax.random.key(8), (1, 6), 0, V)
  _, cache = model(tokens[:, :3], return_cache=True)
  moved, _ = model(tokens[:, 3:], cache=cache._replace(pos=cache.pos + 4), return_cache=True)
  second, _ = model(tokens[:, 3:], cache=cache, return_cache=True)
  assert np.abs(np.asarray(moved - second)).max() > 1e-3


def test_jitted_decoding_matches():
  model = small()
  tokens = jax.random.randint(jax.random.key(6), (2, 4), 0, V)
  step = nnx.jit(lambda m, tok, c: m(tok, cache=c, return_cache=True))
  cache, steps = model.init_cache(2, max_len=8), []
  for t in range(4):
    out, cache = step(model, tokens[:, t:t + 1], cache)
    steps.append(out)
  np.testing.assert_allclose(jnp.concatenate(steps, 1), model(tokens), atol=1e-5, rtol=1e-5)


def test_overflow_raises():
  model = small()
  with pytest.raises(ValueError, match="max_len"):
    model(jnp.zeros((1, 17), jnp.int32))
  _, cache = model(jnp.zeros((1, 10), jnp.int32), return_cache=True)
  with pytest.raises(ValueError, match="max_len"):
    model(jnp.zeros((1, 7), jnp.int32), cache=cache)


def test_dropout_switches():
  model = small(dropout=0.5)
  tokens = jax.random.randint(jax.random.key(7), (2, 6), 0, V)
  np.testing.assert_array_equal(model(tokens), model(tokens))
  model.train()
  a, b = model(tokens), model(tokens)
  assert not np.allclose(a, b)
  model.eval()
  np.testing.assert_array_equal(model(tokens), small(dropout=0.0)(tokens))


def test_bfloat16_runs():
  model = make("transformer", V, d_model=8, n_layers=1, n_heads=2, d_ff=12, max_len=8,
                      dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  logits = model(jnp.zeros((2, 3), jnp.int32))
  assert logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()


def test_build_model():
  cfg = model_config("transformer", d_model=16, n_layers=1, n_heads=2, d_ff=32)
  model = build_model(cfg, 27, nnx.Rngs(0))
  assert isinstance(model, Transformer) and len(model.blocks) == 1
  assert model(jnp.zeros((2, 5), jnp.int32)).shape == (2, 5, 27)


@pytest.mark.parametrize("kw", [{"n_heads": 3}, {"activation": "swish"}, {"dropout": -0.1}])
def test_bad_options_raise(kw):
  with pytest.raises(ValueError):
    make("transformer", V, d_model=8, **{"n_heads": 2, **kw}, rngs=nnx.Rngs(0))


def test_jitted_overflow_gives_nan():
  model = small()
  step = nnx.jit(lambda m, tok, c: m(tok, cache=c, return_cache=True))
  cache = model.init_cache(1, max_len=4)
  for t in range(5):
    logits, cache = step(model, jnp.zeros((1, 1), jnp.int32), cache)
    assert np.isnan(np.asarray(logits)).all() == (t == 4), t
