"""The INN: Algorithm 1, the paper-faithful mode's degeneracy, and distinct neurons by default."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from inn_jax.models import INN, count_params

TINY = dict(d_model=32, n_layers=2, n_neurons=8, n_heads=4, d_state=4, scan_chunk=4)


def tokens(batch=2, length=11, seed=0):
  return jax.random.randint(jax.random.key(seed), (batch, length), 0, 27)


def intermediates(model, x):
  model.capture()
  _, state = nnx.capture(model, nnx.Intermediate)(x)
  model.capture(False)
  flat = nnx.to_flat_state(state)
  return {k[-1] if k[-1] == "neurons_BNLD" else f"attention{k[1]}": np.asarray(v.get_value()[0])
          for k, v in flat}


def test_parameter_count_matches_paper_code():
  paper = INN(27, neuron_identity="none", embed_init="normal", tie_embeddings=True,
                rngs=nnx.Rngs(0))
  assert count_params(paper) == 4_219_163
  # Our default adds neuron embeddings (N x D) and an untied head (D x V).
  assert count_params(INN(27, rngs=nnx.Rngs(0))) == 4_219_163 + 32 * 256 + 256 * 27
  per_neuron_norms = 6 * (32 - 1) * 2 * 256  # neuron_identity="norm": N gains and biases per layer.
  assert count_params(INN(27, neuron_identity="norm", tie_embeddings=True,
                          rngs=nnx.Rngs(0))) == 4_219_163 + per_neuron_norms


def test_paper_faithful_neurons_are_copies():
  """neuron_identity='none': in eval mode all N states are equal and attention is exactly 1/N."""
  model = INN(27, **TINY, neuron_identity="none", rngs=nnx.Rngs(params=0, dropout=1))
  model.eval()
  got = intermediates(model, tokens())
  h = got["neurons_BNLD"]
  assert h.shape == (2, 8, 11, 32)
  np.testing.assert_array_equal(h, np.broadcast_to(h[:, :1], h.shape))
  for layer in range(TINY["n_layers"]):
    np.testing.assert_array_equal(got[f"attention{layer}"], 1 / 8)


@pytest.mark.parametrize("identity", ["embedding", "norm"])
def test_default_neurons_differ(identity):
  model = INN(27, **TINY, neuron_identity=identity, rngs=nnx.Rngs(params=0, dropout=1))
  model.eval()
  got = intermediates(model, tokens())
  h = got["neurons_BNLD"]
  spread = np.abs(h - h.mean(1, keepdims=True)).mean() / np.abs(h).mean()
  assert spread > 1e-3, spread  # Exactly 0 for the paper-faithful model (test above).
  assert np.abs(got["attention0"] - 1 / 8).max() > 1e-3  # Exactly 0 when neurons are copies.


def test_paper_faithful_population_equals_a_single_stream():
  """N=8 copies compute exactly what N=1 computes with the same weights: the extra neurons add
  nothing but cost."""
  many = INN(27, **dict(TINY, n_neurons=8), neuron_identity="none", rngs=nnx.Rngs(0))
  one = INN(27, **dict(TINY, n_neurons=1), neuron_identity="none", rngs=nnx.Rngs(0))
  many.eval()
  one.eval()
  x = tokens()
  np.testing.assert_allclose(many(x), one(x), rtol=1e-5, atol=1e-5)
  default = INN(27, **dict(TINY, n_neurons=8), rngs=nnx.Rngs(0))
  default.eval()
  assert np.abs(default(x) - one(x)).max() > 1e-2


def initial_loss(**kw):
  model = INN(27, **dict(TINY, d_model=64), **kw, rngs=nnx.Rngs(0))
  model.eval()
  logits, targets = model(tokens(4, 32)), tokens(4, 32, seed=1)
  return float(optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean())


def test_initial_loss_paper_init_vs_default():
  """The paper's tied N(0,1) head starts far above ln 27; the default starts near it."""
  paper = dict(embed_init="normal", neuron_identity="none", tie_embeddings=True)
  assert initial_loss(**paper) > 3 * math.log(27)
  assert abs(initial_loss() - math.log(27)) < 0.1


def test_cache_continues_a_sequence():
  model = INN(27, **TINY, rngs=nnx.Rngs(0))
  model.eval()
  x = tokens(length=12)
  full = model(x)
  first, cache = model(x[:, :5], return_cache=True)
  second, _ = model(x[:, 5:], cache=cache, return_cache=True)
  np.testing.assert_allclose(jnp.concatenate([first, second], 1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kw", [dict(communication="static"), dict(communication="none"),
                                dict(norm="algorithm1", neuron_identity="embedding")])
def test_variants_run_and_differ(kw):
  base = INN(27, **TINY, rngs=nnx.Rngs(0))
  variant = INN(27, **TINY, **kw, rngs=nnx.Rngs(0))
  base.eval()
  variant.eval()
  x = tokens()
  out = variant(x)
  assert out.shape == (2, 11, 27) and np.isfinite(out).all()
  assert np.abs(out - base(x)).max() > 1e-3


def test_static_communication_sends_everyone_the_same_message():
  model = INN(27, **TINY, communication="static", rngs=nnx.Rngs(0))
  comm = model.layers[0].comm
  x_TND = jax.random.normal(jax.random.key(0), (5, 8, 32))
  a = comm(x_TND)
  np.testing.assert_allclose(a, np.broadcast_to(a[:, :1], a.shape), rtol=0, atol=0)
  expected = comm.out_proj(comm.in_proj(x_TND).mean(1))
  np.testing.assert_allclose(a[:, 0], expected, rtol=1e-6, atol=1e-6)


def test_attention_matches_numpy():
  model = INN(27, **TINY, rngs=nnx.Rngs(0))
  comm = model.layers[0].comm
  x = np.asarray(jax.random.normal(jax.random.key(0), (3, 8, 32)), np.float64)
  w_in, b_in = (np.asarray(v, np.float64) for v in (comm.in_proj.kernel[...],
                                                   comm.in_proj.bias[...]))
  q, k, v = np.split(x @ w_in + b_in, 3, axis=-1)
  heads = lambda a: a.reshape(3, 8, 4, 8).transpose(0, 2, 1, 3)
  s = heads(q) @ heads(k).transpose(0, 1, 3, 2) / math.sqrt(8)
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  o = (p @ heads(v)).transpose(0, 2, 1, 3).reshape(3, 8, 32)
  ref = o @ np.asarray(comm.out_proj.kernel[...]) + np.asarray(comm.out_proj.bias[...])
  comm.eval()
  np.testing.assert_allclose(comm(jnp.asarray(x, jnp.float32)), ref, rtol=1e-4, atol=1e-5)


def test_bfloat16_compute_tracks_float32():
  f32 = INN(27, **TINY, rngs=nnx.Rngs(0))
  bf16 = INN(27, **TINY, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  f32.eval()
  bf16.eval()
  x = tokens()
  a, b = f32(x), bf16(x)
  assert b.dtype == jnp.float32
  # bf16 keeps 8 mantissa bits (relative rounding 2^-9 per op) over ~20 ops deep: a few percent.
  assert np.abs(a - b).max() < 0.05 * np.abs(a).max()


def test_training_mode_dropout_breaks_the_copies():
  """In the paper's code, only attention dropout (train mode) makes neurons differ."""
  model = INN(27, **TINY, neuron_identity="none", attn_dropout=0.5,
              rngs=nnx.Rngs(params=0, dropout=1))
  model.train()
  h = intermediates(model, tokens())["neurons_BNLD"]
  assert np.abs(h - h[:, :1]).max() > 1e-3


@pytest.mark.parametrize("bad,match", [
    (dict(neuron_identity="random"), "neuron_identity='random' is not one of"),
    (dict(norm="post"), "norm='post' is not one of"),
    (dict(communication="graph"), "communication='graph'"),
    (dict(n_heads=5), "n_heads=5 must divide d_model=32"),
    (dict(norm="algorithm1", neuron_identity="norm"), "needs norm='pre'"),
])
def test_bad_options(bad, match):
  with pytest.raises(ValueError, match=match):
    INN(27, **{**TINY, **bad}, rngs=nnx.Rngs(0))


def _train_grads(remat: bool, seed: int = 3):
  """Loss and gradients in training mode (dropout live) through the trainer's merge-in-jit."""
  model = INN(27, **TINY, attn_dropout=0.3, remat=remat, rngs=nnx.Rngs(params=0, dropout=1))
  model.train()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  x, y = tokens(seed=1), tokens(seed=2)

  @jax.jit
  def f(params, rest):
    def loss(params):
      m = nnx.merge(graphdef, params, jax.tree.map(lambda a: a, rest))
      nnx.reseed(m, dropout=seed)
      return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()
    return jax.value_and_grad(loss)(params)

  return f(params, rest), f


def test_remat_changes_memory_not_results():
  (loss_r, g_r), f_r = _train_grads(True)
  (loss_p, g_p), f_p = _train_grads(False)
  np.testing.assert_allclose(loss_r, loss_p, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g_r), jax.tree.leaves(g_p)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # Dropout is live and each layer draws its own mask: another seed changes the loss.
  assert abs(float(_train_grads(True, seed=4)[0][0]) - float(loss_r)) > 1e-6


def test_remat_keeps_less_for_the_backward_pass():
  def temp_bytes(remat):
    model = INN(27, d_model=32, n_layers=4, n_neurons=8, n_heads=4, d_state=4, scan_chunk=16,
                remat=remat, rngs=nnx.Rngs(0))
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = tokens(batch=4, length=128)
    loss = lambda p: nnx.merge(graphdef, p, rest)(x).sum()
    compiled = jax.jit(jax.grad(loss)).lower(params).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  assert temp_bytes(True) * 2 < temp_bytes(False), (temp_bytes(True), temp_bytes(False))
