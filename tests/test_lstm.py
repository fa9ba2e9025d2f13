"""LSTM baseline: nn.LSTM's parameters, a NumPy forward, causality, caching and dropout."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from inn_jax.models import build_model, count_params, model_config
from inn_jax.models.lstm import LSTM, LSTMLayer
from tests.build import make

V = 11


def torch_lstm_count(vocab, d_embed, hidden, n_layers, tie):
  """nn.Embedding + nn.LSTM (two biases a layer) + [Linear(hidden, d_embed, bias=False)] + head."""
  lstm = sum(4 * ((d_embed if i == 0 else hidden) * hidden + hidden * hidden + 2 * hidden)
             for i in range(n_layers))
  proj = 0 if d_embed == hidden else hidden * d_embed
  return vocab * d_embed + lstm + proj + (0 if tie else d_embed * vocab) + vocab


def numpy_layer(layer, x, h, c):
  """PyTorch's LSTM equations in float64, one step at a time; gates i, f, g, o."""
  p = {k: np.asarray(getattr(layer, k)[...], np.float64)
       for k in ("w_ih_IG", "w_hh_UG", "b_ih_G", "b_hh_G")}
  sig = lambda a: 1 / (1 + np.exp(-a))
  hs = []
  for t in range(x.shape[1]):
    g = x[:, t] @ p["w_ih_IG"] + p["b_ih_G"] + h @ p["w_hh_UG"] + p["b_hh_G"]
    i, f, gg, o = np.split(g, 4, axis=-1)
    c = sig(f) * c + sig(i) * np.tanh(gg)
    h = sig(o) * np.tanh(c)
    hs.append(h)
  return np.stack(hs, 1), h, c


def small(d_embed=None, tie=True, dropout=0.0, n_layers=2, seed=0):
  model = make("lstm", V, hidden=8, n_layers=n_layers, d_embed=d_embed, dropout=dropout,
               tie_embeddings=tie, rngs=nnx.Rngs(seed))
  model.eval()
  return model


@pytest.mark.parametrize("d_embed,tie", [(None, True), (6, True), (6, False)])
def test_parameter_count_matches_torch(d_embed, tie):
  model = small(d_embed, tie, n_layers=3)
  assert count_params(model) == torch_lstm_count(V, d_embed or 8, 8, 3, tie)


def test_paper_size_count():
  model = nnx.eval_shape(lambda: make("lstm", 27, rngs=nnx.Rngs(0)))
  assert count_params(model) == torch_lstm_count(27, 512, 512, 3, True) == 6_317_595


def test_torch_initialisation():
  layer = LSTMLayer(5, 16, rngs=nnx.Rngs(0))
  for w in (layer.w_ih_IG, layer.w_hh_UG, layer.b_ih_G, layer.b_hh_G):
    w = np.abs(np.asarray(w[...]))
    assert w.max() <= 0.25 and w.max() > 0.2  # U(+-1/sqrt(16)), not a narrower law.


def test_layer_matches_numpy():
  layer = LSTMLayer(5, 8, rngs=nnx.Rngs(1))
  x = np.asarray(jax.random.normal(jax.random.key(2), (3, 7, 5)), np.float64)
  h0 = np.asarray(jax.random.normal(jax.random.key(3), (3, 8)), np.float64) * 0.5
  c0 = np.asarray(jax.random.normal(jax.random.key(4), (3, 8)), np.float64)
  y, (h, c) = layer(jnp.asarray(x, jnp.float32), (jnp.asarray(h0, jnp.float32),
                                                  jnp.asarray(c0, jnp.float32)))
  y_ref, h_ref, c_ref = numpy_layer(layer, x, h0, c0)
  # float32 rounding of O(1) gate pre-activations summed over 13 products: ~1e-6; 1e-5 has margin.
  chex.assert_trees_all_close((y, h, c), (y_ref, h_ref, c_ref), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("d_embed", [None, 6])
def test_model_matches_numpy(d_embed):
  model = small(d_embed, n_layers=2)
  tokens = jax.random.randint(jax.random.key(0), (2, 6), 0, V)
  x = np.asarray(model.embed.encode(tokens), np.float64)
  for layer in model.layers:
    x, _, _ = numpy_layer(layer, x, np.zeros((2, 8)), np.zeros((2, 8)))
  if model.proj is not None:
    x = x @ np.asarray(model.proj.kernel[...], np.float64)
  table = np.asarray(model.embed.table_VD[...], np.float64)
  want = x @ table.T + np.asarray(model.embed.bias_V[...])
  np.testing.assert_allclose(model(tokens), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("d_embed", [None, 6])
def test_causal(monkeypatch, d_embed):
  model = small(d_embed)
  length = 6
  x = jax.random.normal(jax.random.key(1), (1, length, d_embed or 8))
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
  second, _ = model(tokens[:, 5:], cache=cache, return_cache=True)
  cache, steps = model.init_cache(2), []
  for t in range(12):
    out, cache = model(tokens[:, t:t + 1], cache=cache, return_cache=True)
    steps.append(out)
  # The same scan steps run in each case; only the input matmul changes shape (its summation
  # order may differ), so the gap is float32 rounding: ~1e-7 relative on O(1) logits.
  np.testing.assert_allclose(jnp.concatenate([first, second], 1), full, atol=1e-6, rtol=1e-6)
  np.testing.assert_allclose(jnp.concatenate(steps, 1), full, atol=1e-6, rtol=1e-6)


def test_jitted_decoding_matches():
  model = small()
  tokens = jax.random.randint(jax.random.key(6), (2, 4), 0, V)
  step = nnx.jit(lambda m, tok, c: m(tok, cache=c, return_cache=True))
  cache, steps = model.init_cache(2), []
  for t in range(4):
    out, cache = step(model, tokens[:, t:t + 1], cache)
    steps.append(out)
  np.testing.assert_allclose(jnp.concatenate(steps, 1), model(tokens), atol=1e-6, rtol=1e-6)


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
  model = make("lstm", V, hidden=8, n_layers=2, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  logits, cache = model(jnp.zeros((2, 3), jnp.int32), return_cache=True)
  assert logits.dtype == jnp.float32 and cache[0].c_BU.dtype == jnp.float32
  assert np.isfinite(np.asarray(logits)).all()


def test_build_model():
  model = build_model(model_config("lstm", hidden=16, n_layers=2), 27, nnx.Rngs(0))
  assert isinstance(model, LSTM) and len(model.layers) == 2
  assert model(jnp.zeros((2, 5), jnp.int32)).shape == (2, 5, 27)


@pytest.mark.parametrize("kw", [{"n_layers": 0}, {"dropout": 1.0}, {"embed_init": "xavier"}])
def test_bad_options_raise(kw):
  with pytest.raises(ValueError):
    make("lstm", V, hidden=8, **kw, rngs=nnx.Rngs(0))
