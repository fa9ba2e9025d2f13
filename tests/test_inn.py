"""The INN: Algorithm 1, the paper-faithful mode's degeneracy, per-neuron memories, and the
vmapped communication against a NumPy loop."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from inn_jax.models import INN, INNConfig, count_params
from inn_jax.nn import Communication, CommunicationConfig
from tests.build import make

TINY = dict(d_model=32, n_layers=2, n_neurons=8, n_heads=4, d_state=4, scan_chunk=4)
COPIES = dict(neuron_identity="none", neuron_params="shared")  # The paper code's neurons.


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
  paper = make("inn", 27, neuron_identity="none", neuron_params="shared", embed_init="normal",
              tie_embeddings=True, rngs=nnx.Rngs(0))
  assert count_params(paper) == 4_219_163
  # Our default: each neuron its own memory, 32 times narrower (16 wide: 32 x 13,680 = 437,760,
  # the shared block's count), and an untied head (D x V).
  default = make("inn", 27, rngs=nnx.Rngs(0))
  assert default.layers[0].memory.d_inner == 16
  assert count_params(default) == 4_219_163 + 256 * 27
  assert count_params(make("inn", 27, neuron_identity="embedding", neuron_params="shared",
                          rngs=nnx.Rngs(0))) == 4_219_163 + 32 * 256 + 256 * 27
  per_neuron_norms = 6 * (32 - 1) * 2 * 256  # neuron_identity="norm": N gains and biases per layer.
  assert count_params(make("inn", 27, neuron_identity="norm", neuron_params="shared",
                          tie_embeddings=True, rngs=nnx.Rngs(0))) == 4_219_163 + per_neuron_norms


@pytest.mark.parametrize("neuron_params,extra", [
    ("ssm", 6 * 31 * (512 * 16 + 2 * 512)),  # Each neuron its own A (E x S), D and dt bias (E).
    ("full", 6 * 31 * 437_760),  # Each neuron its own Mamba block (test_mamba: 437,760).
])
def test_parameter_count_of_per_neuron_memories(neuron_params, extra):
  """The paper-code form (4,219,163) plus (N - 1) x the per-neuron parameters of 6 layers."""
  model = make("inn", 27, neuron_identity="none", neuron_params=neuron_params, expand=2.0,
              embed_init="normal", tie_embeddings=True, rngs=nnx.Rngs(0))
  assert count_params(model) == 4_219_163 + extra


def test_paper_faithful_neurons_are_copies():
  """neuron_identity='none': in eval mode all N states are equal and attention is exactly 1/N."""
  model = make("inn", 27, **TINY, **COPIES, rngs=nnx.Rngs(params=0, dropout=1))
  model.eval()
  got = intermediates(model, tokens())
  h = got["neurons_BNLD"]
  assert h.shape == (2, 8, 11, 32)
  np.testing.assert_array_equal(h, np.broadcast_to(h[:, :1], h.shape))
  for layer in range(TINY["n_layers"]):
    np.testing.assert_array_equal(got[f"attention{layer}"], 1 / 8)


# (form, least spread between neurons at initialisation, relative). "ssm" neurons differ at the
# start only through their dt biases, a small part of the residual stream (measured 5e-5; the
# paper-code form's spread is exactly 0, above): still 400 float32 ulps away from copies.
FORMS_THAT_DIFFER = [(dict(neuron_identity="embedding"), 1e-3),
                     (dict(neuron_identity="norm"), 1e-3),
                     (dict(neuron_identity="none", neuron_params="ssm"), 1e-5),
                     (dict(neuron_identity="none", neuron_params="full"), 1e-3)]


@pytest.mark.parametrize("form,least", FORMS_THAT_DIFFER)
def test_neurons_differ(form, least):
  """Every form but the paper's code: neurons differ, and so does their attention."""
  model = make("inn", 27, **TINY, **form, rngs=nnx.Rngs(params=0, dropout=1))
  model.eval()
  got = intermediates(model, tokens())
  h = got["neurons_BNLD"]
  spread = np.abs(h - h.mean(1, keepdims=True)).mean() / np.abs(h).mean()
  assert spread > least, spread
  assert np.abs(got["attention0"] - 1 / 8).max() > least  # Exactly 0 when neurons are copies.


def test_paper_faithful_population_equals_a_single_stream():
  """N=8 copies compute exactly what N=1 computes with the same weights: the extra neurons add
  nothing but cost."""
  many = make("inn", 27, **dict(TINY, n_neurons=8), **COPIES, rngs=nnx.Rngs(0))
  one = make("inn", 27, **dict(TINY, n_neurons=1), **COPIES, rngs=nnx.Rngs(0))
  many.eval()
  one.eval()
  x = tokens()
  np.testing.assert_allclose(many(x), one(x), rtol=1e-5, atol=1e-5)
  default = make("inn", 27, **dict(TINY, n_neurons=8), rngs=nnx.Rngs(0))
  default.eval()
  assert np.abs(default(x) - one(x)).max() > 1e-2


def test_a_memory_override_keeps_the_default_form():
  """INNConfig(memory=MambaConfig(d_state=8)) changes the state size of the INN's default memory
  (each neuron its own, parameter-matched) and nothing else: its neurons are not the paper code's
  copies, whose N = 8 logits equal N = 1's. The paper code's form is had by asking for it."""
  from inn_jax.models.inn import INNConfig
  from inn_jax.nn import CommunicationConfig, MambaConfig
  size = dict(d_model=32, n_layers=2, communication=CommunicationConfig(n_heads=4))
  config = INNConfig(**size, n_neurons=8, memory=MambaConfig(d_state=8))
  assert config.memory == INNConfig().memory.replace(d_state=8)
  assert (config.memory.neuron_params, config.memory.expand) == ("full", None)
  x = tokens()
  def logits(cfg):
    model = INN(cfg, 27, rngs=nnx.Rngs(0))
    model.eval()
    return model(x)

  one = INNConfig(**size, n_neurons=1, memory=MambaConfig(d_state=8))
  assert np.abs(logits(config) - logits(one)).max() > 1e-2
  paper = INNConfig.paper_code(**size, n_neurons=8).replace(
      memory=MambaConfig(d_state=8, expand=2.0, neuron_params="shared"))
  np.testing.assert_allclose(logits(paper), logits(paper.replace(n_neurons=1)), rtol=1e-5,
                             atol=1e-5)


def initial_loss(**kw):
  model = make("inn", 27, **dict(TINY, d_model=64), **kw, rngs=nnx.Rngs(0))
  model.eval()
  logits, targets = model(tokens(4, 32)), tokens(4, 32, seed=1)
  return float(optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean())


def test_initial_loss_paper_init_vs_default():
  """The paper's tied N(0,1) head starts far above ln 27; the default starts near it."""
  paper = dict(embed_init="normal", **COPIES, tie_embeddings=True)
  assert initial_loss(**paper) > 3 * math.log(27)
  assert abs(initial_loss() - math.log(27)) < 0.1


def test_cache_continues_a_sequence():
  model = make("inn", 27, **TINY, rngs=nnx.Rngs(0))
  model.eval()
  x = tokens(length=12)
  full = model(x)
  first, cache = model(x[:, :5], return_cache=True)
  second, _ = model(x[:, 5:], cache=cache, return_cache=True)
  np.testing.assert_allclose(jnp.concatenate([first, second], 1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kw", [dict(communication="static"), dict(communication="none"),
                                dict(norm="algorithm1", neuron_identity="embedding")])
def test_variants_run_and_differ(kw):
  base = make("inn", 27, **TINY, rngs=nnx.Rngs(0))
  variant = make("inn", 27, **TINY, **kw, rngs=nnx.Rngs(0))
  base.eval()
  variant.eval()
  x = tokens()
  out = variant(x)
  assert out.shape == (2, 11, 27) and np.isfinite(out).all()
  assert np.abs(out - base(x)).max() > 1e-3


def test_static_communication_sends_everyone_the_same_message():
  model = make("inn", 27, **TINY, communication="static", rngs=nnx.Rngs(0))
  comm = model.layers[0].comm
  x_BNLD = jax.random.normal(jax.random.key(0), (2, 8, 5, 32))
  a = comm(x_BNLD)
  np.testing.assert_allclose(a, np.broadcast_to(a[:, :1], a.shape), rtol=0, atol=0)
  expected = comm.out_proj(comm.in_proj(x_BNLD).mean(1))
  np.testing.assert_allclose(a[:, 0], expected, rtol=1e-6, atol=1e-6)


def numpy_attention(x_ND, w_in, b_in, w_out, b_out, heads):
  """Softmax attention over one token's N neurons, in float64; each head as wide as the
  in-projection gives (3 x heads x K outputs)."""
  n = x_ND.shape[0]
  width = w_in.shape[1] // (3 * heads)
  q, k, v = (a.reshape(n, heads, width).transpose(1, 0, 2)
             for a in np.split(x_ND @ w_in + b_in, 3, axis=-1))
  s = q @ k.transpose(0, 2, 1) / math.sqrt(width)
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return (p @ v).transpose(1, 0, 2).reshape(n, heads * width) @ w_out + b_out, p


def test_vmapped_attention_matches_a_numpy_loop_over_batch_and_time():
  model = make("inn", 27, **TINY, rngs=nnx.Rngs(0))
  comm = model.layers[0].comm
  comm.eval()
  x = np.asarray(jax.random.normal(jax.random.key(0), (2, 8, 3, 32)), np.float64)
  w = [np.asarray(a, np.float64) for a in (comm.in_proj.kernel[...], comm.in_proj.bias[...],
                                           comm.out_proj.kernel[...], comm.out_proj.bias[...])]
  comm.record = True
  got, state = nnx.capture(comm, nnx.Intermediate)(jnp.asarray(x, jnp.float32))
  comm.record = False
  weights_THNN = np.asarray(nnx.to_flat_state(state)[0][1].get_value()[0])
  for b in range(2):
    for t in range(3):
      want, p_HNN = numpy_attention(x[b, :, t], *w, heads=4)
      np.testing.assert_allclose(got[b, :, t], want, rtol=1e-4, atol=1e-5)
      np.testing.assert_allclose(weights_THNN[b * 3 + t], p_HNN, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("head_dim", [3, 16])
def test_a_fixed_head_width_attends_as_a_numpy_loop(head_dim):
  """communication.head_dim: queries, keys and values H x K wide whatever the neurons' width
  (here 2-wide neurons, 2 heads of 3 or 16), the output projected back to the neuron."""
  comm_cfg = CommunicationConfig(n_heads=2, head_dim=head_dim, dropout=0.0)
  comm = Communication(2, comm_cfg, rngs=nnx.Rngs(0))
  assert comm.in_proj.kernel.shape == (2, 3 * 2 * head_dim)
  assert comm.out_proj.kernel.shape == (2 * head_dim, 2)
  x = np.asarray(jax.random.normal(jax.random.key(0), (2, 5, 3, 2)), np.float64)
  w = [np.asarray(a, np.float64) for a in (comm.in_proj.kernel[...], comm.in_proj.bias[...],
                                           comm.out_proj.kernel[...], comm.out_proj.bias[...])]
  got = np.asarray(comm(jnp.asarray(x, jnp.float32)))
  for b in range(2):
    for t in range(3):
      want, _ = numpy_attention(x[b, :, t], *w, heads=2)
      np.testing.assert_allclose(got[b, :, t], want, rtol=1e-4, atol=1e-5)


def test_head_dim_of_the_default_width_is_the_default_model():
  """head_dim = width / n_heads builds the same parameters and outputs as head_dim None."""
  x = jnp.asarray(np.random.default_rng(0).integers(0, 27, (2, 7)), jnp.int32)
  outs = []
  for head_dim in (None, 32 // 4):
    model = make("inn", 27, **TINY, head_dim=head_dim, rngs=nnx.Rngs(0))
    outs.append((count_params(model), np.asarray(model(x))))
  assert outs[0][0] == outs[1][0]
  np.testing.assert_array_equal(outs[0][1], outs[1][1])


def test_head_dim_is_refused_where_it_means_nothing():
  with pytest.raises(ValueError, match="head_dim=4 has no heads to size"):
    CommunicationConfig(kind="static", head_dim=4)
  with pytest.raises(ValueError, match="head_dim"):
    CommunicationConfig(head_dim=0)
  with pytest.raises(ValueError, match="communication.n_heads=3 must divide"):
    INNConfig(d_model=8, n_neurons=2, communication=CommunicationConfig(n_heads=3))
  INNConfig(d_model=8, n_neurons=2, communication=CommunicationConfig(n_heads=3, head_dim=4))


def test_attention_dropout_masks_each_token_on_its_own():
  """Training mode: dropout zeroes attention weights token by token (not one mask for all)."""
  model = make("inn", 27, **TINY, attn_dropout=0.5, rngs=nnx.Rngs(params=0, dropout=1))
  comm = model.layers[0].comm
  x = jnp.broadcast_to(jax.random.normal(jax.random.key(0), (1, 8, 1, 32)), (1, 8, 6, 32))
  comm.train()
  a = np.asarray(comm(x))
  comm.eval()
  clean = np.asarray(comm(x))
  np.testing.assert_allclose(clean, np.broadcast_to(clean[:, :, :1], clean.shape), atol=1e-6)
  assert np.abs(a - clean).max() > 1e-3  # Dropout is live...
  assert np.abs(a[:, :, 1:] - a[:, :, :1]).max() > 1e-3  # ...and differs between tokens.


def test_bfloat16_compute_tracks_float32():
  f32 = make("inn", 27, **TINY, rngs=nnx.Rngs(0))
  bf16 = make("inn", 27, **TINY, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  f32.eval()
  bf16.eval()
  x = tokens()
  a, b = f32(x), bf16(x)
  assert b.dtype == jnp.float32
  # bf16 keeps 8 mantissa bits (relative rounding 2^-9 per op) over ~20 ops deep: a few percent.
  assert np.abs(a - b).max() < 0.05 * np.abs(a).max()


def test_training_mode_dropout_breaks_the_copies():
  """In the paper's code, only attention dropout (train mode) makes neurons differ."""
  model = make("inn", 27, **TINY, **COPIES, attn_dropout=0.5,
              rngs=nnx.Rngs(params=0, dropout=1))
  model.train()
  h = intermediates(model, tokens())["neurons_BNLD"]
  assert np.abs(h - h[:, :1]).max() > 1e-3


@pytest.mark.parametrize("bad,match", [
    (dict(neuron_identity="random"), "model.neuron_identity='random' must be one of"),
    (dict(norm="post"), "model.norm='post' must be one of"),
    (dict(communication="graph"), "model.communication='graph' must be one of"),
    (dict(n_heads=5), "n_heads=5 must divide d_model=32"),
    (dict(norm="algorithm1", neuron_identity="norm"), "needs norm='pre'"),
    (dict(neuron_params="some"), "model.neuron_params='some' must be one of"),
    (dict(remat=True), "model.remat=True must be one of"),
])
def test_bad_options(bad, match):
  with pytest.raises(ValueError, match=match):
    make("inn", 27, **{**TINY, **bad}, rngs=nnx.Rngs(0))


@functools.cache
def _compiled_grads(remat: str, dropout: float, kw: tuple):
  """(f, params, rest) of one model; f(params, rest, seed) traces the dropout seed, so that the
  seeds of one model share a compilation."""
  model = make("inn", 27, **TINY, attn_dropout=dropout, remat=remat, **dict(kw),
              rngs=nnx.Rngs(params=0, dropout=1))
  model.train()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  x, y = tokens(batch=4, seed=1), tokens(batch=4, seed=2)

  @jax.jit
  def f(params, rest, seed):
    def loss(params):
      m = nnx.merge(graphdef, params, jax.tree.map(lambda a: a, rest))
      nnx.reseed(m, dropout=jax.random.key(seed))
      return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()
    return jax.value_and_grad(loss)(params)

  return f, params, rest


def _train_grads(remat: str, seed: int = 3, dropout: float = 0.3, **kw):
  """Loss and gradients in training mode through the trainer's merge-in-jit."""
  f, params, rest = _compiled_grads(remat, dropout, tuple(sorted(kw.items())))
  return f(params, rest, jnp.uint32(seed))


def assert_same(a, b):
  """(loss, grads) equal up to float32 rounding: remat recomputes the same ops, which XLA may
  fuse and so round differently."""
  np.testing.assert_allclose(a[0], b[0], rtol=1e-6)
  chex.assert_trees_all_close(a[1], b[1], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_remat_changes_memory_not_results():
  plain = _train_grads("none")
  assert_same(_train_grads("layer"), plain)  # The same dropout masks, recomputed.
  # Dropout is live and each layer draws its own mask: another seed changes the loss.
  assert abs(float(_train_grads("layer", seed=4)[0]) - float(plain[0])) > 1e-6
  # Row slices draw their own masks (as micro-batches do): equal to no remat without dropout.
  plain_no_dropout = _train_grads("none", dropout=0.0)
  assert_same(_train_grads("rows", dropout=0.0), plain_no_dropout)
  assert_same(_train_grads("rows", dropout=0.0, remat_rows=2), plain_no_dropout)
  rows = _train_grads("rows")
  assert_same(rows, _train_grads("rows"))  # Deterministic in the seed...
  assert abs(float(rows[0]) - float(plain[0])) > 1e-6  # ...with masks of its own.


@pytest.mark.parametrize("remat", ["layer", "rows"])
def test_remat_keeps_less_for_the_backward_pass(remat):
  def temp_bytes(remat):
    model = make("inn", 27, d_model=32, n_layers=4, n_neurons=8, n_heads=4, d_state=4,
                 scan_chunk=16, remat=remat, rngs=nnx.Rngs(0))
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = tokens(batch=4, length=128)
    loss = lambda p: nnx.merge(graphdef, p, rest)(x).sum()
    compiled = jax.jit(jax.grad(loss)).lower(params).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  assert temp_bytes(remat) * 2 < temp_bytes("none"), (temp_bytes(remat), temp_bytes("none"))
