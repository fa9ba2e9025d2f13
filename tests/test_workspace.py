"""The workspace and narrow neurons (issue 23): the workspace equals a NumPy loop over tokens,
slots and neurons; populations are permutation-equivariant over neurons and causal; decoding
with the recurrent cache equals the full pass; sharded runs equal one device and the only
exchange on the neuron axis is one all-reduce of the slots per layer; today's models are
unchanged (their parameter counts are pinned in tests/test_inn.py)."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from inn_jax import sharding
from inn_jax.models import INN, INNConfig, count_params
from inn_jax.nn import CommunicationConfig, MambaConfig
from inn_jax.nn.workspace import CAP, Workspace
from tests.build import sharded_inn
from tests.test_train_mesh import collectives


def numpy_workspace(ws, x_BNLD):
  """The workspace by loops: per token, each slot's softmax over the neurons (soft-capped
  logits), then each neuron's softmax over the slots."""
  p = lambda lin: (np.asarray(lin.kernel[...], np.float64), np.asarray(lin.bias[...], np.float64))
  (w_kv, b_kv), (w_q, b_q), (w_skv, b_skv), (w_o, b_o) = (
      p(ws.neuron_kv), p(ws.neuron_q), p(ws.slot_kv), p(ws.out_proj))
  q_slots = np.asarray(ws.slot_queries[...], np.float64)
  x = np.asarray(x_BNLD, np.float64)
  batch, n, length, _ = x.shape
  h, k, m = ws.n_heads, ws.head_dim, ws.slots
  d = h * k  # The slots' and messages' width (the neurons' unless head_dim is given).
  out = np.zeros((batch, n, length, w_o.shape[1]))
  writes = np.zeros((batch, length, m, h, n))  # Slot s's weight on neuron n.
  reads = np.zeros((batch, n, length, h, m))  # Neuron n's weight on slot s.
  for b in range(batch):
    for t in range(length):
      kv = x[b, :, t] @ w_kv + b_kv  # (N, 2D)
      keys, values = kv[:, :d], kv[:, d:]
      slots = np.zeros((m, d))
      for head in range(h):
        hs = slice(head * k, (head + 1) * k)
        for s in range(m):
          logits = keys[:, hs] @ q_slots[s, hs] / np.sqrt(k)
          e = np.exp(CAP * np.tanh(logits / CAP))
          writes[b, t, s, head] = e / e.sum()
          slots[s, hs] = writes[b, t, s, head] @ values[:, hs]
      skv = slots @ w_skv + b_skv
      s_keys, s_values = skv[:, :d], skv[:, d:]
      queries = x[b, :, t] @ w_q + b_q
      o = np.zeros((n, d))
      for head in range(h):
        hs = slice(head * k, (head + 1) * k)
        for i in range(n):
          logits = s_keys[:, hs] @ queries[i, hs] / np.sqrt(k)
          w = np.exp(logits - logits.max())
          reads[b, i, t, head] = w / w.sum()
          o[i, hs] = reads[b, i, t, head] @ s_values[:, hs]
      out[b, :, t] = o @ w_o + b_o
  return out, writes, reads


def test_workspace_equals_a_numpy_loop():
  """Its output and the weights it records for the analyses (who writes to and reads which
  slot)."""
  ws = Workspace(8, slots=3, n_heads=2, dropout=0.0, dtype=jnp.float32, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (2, 5, 3, 8))
  want, writes, reads = numpy_workspace(ws, x)
  np.testing.assert_allclose(ws(x), want, rtol=1e-4, atol=1e-5)
  ws.record = True
  _, sown = nnx.capture(ws, nnx.Intermediate)(x)
  got = {k[-1]: v.get_value()[0] for k, v in nnx.to_flat_state(sown)}
  np.testing.assert_allclose(got["write_BLmHN"], writes, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got["read_BNLHm"], reads, rtol=1e-5, atol=1e-6)


def test_a_workspace_with_a_fixed_head_width_equals_the_numpy_loop():
  """head_dim: slots, queries, keys and values 2 x 5 wide for 3-wide neurons."""
  ws = Workspace(3, slots=4, n_heads=2, head_dim=5, dropout=0.0, dtype=jnp.float32,
                 rngs=nnx.Rngs(0))
  assert ws.slot_queries.shape == (4, 10) and ws.out_proj.kernel.shape == (10, 3)
  x = jax.random.normal(jax.random.key(2), (2, 6, 3, 3))
  want, _, _ = numpy_workspace(ws, x)
  np.testing.assert_allclose(ws(x), want, rtol=1e-4, atol=1e-5)


def config(kind, n=8, width=8, layers=2, dropout=0.0, heads=2):
  return INNConfig(d_model=16, n_layers=layers, n_neurons=n, neuron_width=width,
                   memory=MambaConfig(expand=None, neuron_params="full", d_state=4,
                                      scan_chunk=4),
                   communication=CommunicationConfig(kind=kind, n_heads=heads, dropout=dropout,
                                                     slots=4))


def tokens(batch=2, length=10, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 27, (batch, length)), jnp.int32)


@pytest.mark.parametrize("kind", ["attention", "workspace", "none"])
def test_permuting_the_neurons_leaves_the_model_unchanged(kind):
  """Equivariance over neurons: relabelling every per-neuron parameter's slices (the same
  permutation throughout) gives the same logits."""
  model = INN(config(kind), 27, rngs=nnx.Rngs(0))
  model.eval()
  want = model(tokens())
  perm = np.random.default_rng(3).permutation(8)
  state = nnx.state(model)
  permuted = jax.tree.map(lambda v: v.replace(v[...][perm]) if isinstance(
      v, sharding.NeuronParam) else v, state, is_leaf=lambda v: isinstance(v, nnx.Variable))
  nnx.update(model, permuted)
  np.testing.assert_allclose(model(tokens()), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["attention", "workspace"])
def test_causal_and_the_cache_continues_the_sequence(kind):
  model = INN(config(kind), 27, rngs=nnx.Rngs(0))
  model.eval()
  x = tokens()
  changed = x.at[:, 7:].set((x[:, 7:] + 5) % 27)
  np.testing.assert_allclose(model(changed)[:, :7], model(x)[:, :7], rtol=1e-5, atol=1e-6)
  full = model(x)
  first, cache = model(x[:, :4], cache=model.init_cache(2), return_cache=True)
  steps = [first]
  for t in range(4, 10):
    logits, cache = model(x[:, t:t + 1], cache=cache, return_cache=True)
    steps.append(logits)
  np.testing.assert_allclose(jnp.concatenate(steps, 1), full, rtol=1e-4, atol=1e-5)


def test_narrow_neurons_cost_less_and_full_width_is_todays_model():
  wide = INN(config("attention", width=None), 27, rngs=nnx.Rngs(0))
  today = INN(config("attention", width=None).replace(neuron_width=None), 27, rngs=nnx.Rngs(0))
  assert count_params(wide) == count_params(today)
  assert wide.neuron_in_DE is None and wide.neuron_out_ED is None
  narrow = INN(config("attention", n=8, width=4), 27, rngs=nnx.Rngs(0))
  assert narrow.neuron_in_DE[...].shape == (8, 16, 4)  # Per neuron: D -> d_neuron.
  assert narrow.layers[0].memory.d_inner == 8  # Its memory: expand 2 on its own width.


def test_narrow_neurons_project_in_and_out_as_numpy_loops_do():
  """Each neuron's own view of the embedding (x @ W_in[n]) and the readout, the mean over
  neurons of h_n @ W_out[n], by loops; between them the layer as it is (tested elsewhere)."""
  model = INN(config("none", n=3, width=4, layers=1), 27, rngs=nnx.Rngs(0))
  model.eval()
  model.capture()
  x = tokens(2, 5)
  logits, sown = nnx.capture(model, nnx.Intermediate)(x)
  (_, h_last), = [(k, v.get_value()[0]) for k, v in nnx.to_flat_state(sown)
                  if k[-1] == "neurons_BNLD"]
  x_BLD = np.asarray(model.embed.encode(x), np.float64)
  w_in = np.asarray(model.neuron_in_DE[...], np.float64)
  w_out = np.asarray(model.neuron_out_ED[...], np.float64)
  h0 = np.zeros((2, 3, 5, 4))
  for b in range(2):
    for n in range(3):
      for t in range(5):
        h0[b, n, t] = x_BLD[b, t] @ w_in[n]
  want_h, _ = model.layers[0].remember(jnp.asarray(h0, jnp.float32))
  np.testing.assert_allclose(h_last, want_h, rtol=1e-5, atol=1e-6)
  h = np.asarray(h_last, np.float64)
  y = np.zeros((2, 5, 16))
  for b in range(2):
    for t in range(5):
      y[b, t] = sum(h[b, n, t] @ w_out[n] for n in range(3)) / 3
  want = model.embed.decode(model.final_norm(jnp.asarray(y, jnp.float32)))
  np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)


def loss(model, x, rngs=None):
  logits = model(x) if rngs is None else model(x, rngs=rngs)
  return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], x[:, 1:]).mean()


@pytest.mark.parametrize("mesh_shape", [(1, 2), (2, 2),
                                        pytest.param((1, 4), marks=pytest.mark.slow)])
def test_the_workspace_exchanges_one_reduction_of_the_slots_per_layer(mesh_shape):
  """Sharded forward and gradient equal one device's; the compiled step has no all-gather (no
  neuron's keys or values travel) and no all-to-all: on the neuron axis, all-reduces only,
  whatever N (here 8 neurons over 2 or 4 devices)."""
  cfg = config("workspace", layers=2)
  x = tokens(4, 8)
  ref = INN(cfg, 27, rngs=nnx.Rngs(0))
  ref.eval()
  want_loss, want_grads = nnx.value_and_grad(loss)(ref, x)
  mesh = jax.make_mesh(mesh_shape, ("data", "neuron"), axis_types=(AxisType.Auto,) * 2)
  with jax.set_mesh(mesh), sharding.axis_rules(sharding.RULES):
    model = sharded_inn(cfg, mesh)
    fn = nnx.jit(nnx.value_and_grad(loss))
    xs = jax.device_put(x, P("data"))
    got_loss, got_grads = fn(model, xs)
    step = fn.lower(model, xs).compile()
    forward = nnx.jit(lambda m, x: m(x)).lower(model, xs).compile()
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
  g = lambda t: np.asarray(nnx.to_pure_dict(t)["layers"][0]["comm"]["neuron_kv"]["kernel"])
  np.testing.assert_allclose(g(got_grads), g(want_grads), rtol=1e-4, atol=1e-6)
  kinds = collections.Counter(kind for kind, _ in collectives(step.as_text()))
  assert set(kinds) == {"all-reduce"}, kinds
  # Forward: per layer one all-reduce of this device's batch rows' slots (numerator and
  # denominator together: (B, L, m, H, K + 1)), and one (B, L, D) for the readout's mean; the
  # narrow neurons' two LayerNorms per layer each sum their mean and variance over the
  # population, (B, L) numbers apiece.
  b, length, comm = 4 // mesh_shape[0], 8, cfg.communication
  slots = (b, length, comm.slots, comm.n_heads, cfg.width // comm.n_heads + 1)
  norms = [(b, length)] * (2 * 2 * cfg.n_layers)
  shapes = sorted(s for kind, found in collectives(forward.as_text()) for s in found)
  assert shapes == sorted([slots] * cfg.n_layers + [(b, length, cfg.d_model)] + norms), shapes


def test_dense_attention_gathers_every_neurons_keys_where_the_workspace_does_not():
  """The contrast that makes the test above mean something: attention over the neurons
  all-gathers the population's keys and values once per layer on the same mesh."""
  mesh = jax.make_mesh((1, 2), ("data", "neuron"), axis_types=(AxisType.Auto,) * 2)
  found = {}
  for kind in ("attention", "workspace"):
    cfg = config(kind, layers=2)
    with jax.set_mesh(mesh), sharding.axis_rules(sharding.RULES):
      model = sharded_inn(cfg, mesh)
      text = nnx.jit(lambda m, x: m(x)).lower(model, tokens(4, 8)).compile().as_text()
    found[kind] = collections.Counter(k for k, _ in collectives(text))
  assert found["attention"]["all-gather"] == 2 and found["workspace"]["all-gather"] == 0, found


def test_workspace_dropout_is_on_in_training_only_and_keys_make_it_pure():
  """Dropout on the write and read weights, as attention's: eval mode ignores it; train mode with
  a key is reproducible and differs from eval; jax.grad over split state works with a key."""
  model = INN(config("workspace", dropout=0.5), 27, rngs=nnx.Rngs(params=0))
  x = tokens()
  model.eval()
  clean = model(x)
  model.train()
  with pytest.raises(ValueError, match="no 'dropout' stream"):
    model(x)
  key = jax.random.key(7)
  noisy = model(x, rngs=key)
  np.testing.assert_array_equal(noisy, model(x, rngs=key))
  assert float(jnp.abs(noisy - clean).max()) > 1e-3
  graphdef, state = nnx.split(model)
  grads = jax.grad(lambda s: loss(nnx.merge(graphdef, s), x, rngs=key))(state)
  g = nnx.to_pure_dict(grads)["layers"][0]["comm"]["slot_queries"]
  assert np.isfinite(np.asarray(g)).all() and float(np.abs(np.asarray(g)).max()) > 0


def test_narrow_neurons_are_normalised_over_the_population():
  """LayerNorm(population=True) equals NumPy over each token's N x d features; and with neurons
  one feature wide the model still reads its past (normalised alone, a 1-wide neuron's memory
  and messages would see a constant, and earlier tokens could not change later logits)."""
  from inn_jax.nn import LayerNorm
  x = np.asarray(jax.random.normal(jax.random.key(2), (2, 5, 3, 4)), np.float64)  # B, N, L, d
  mean = x.mean((1, 3), keepdims=True)
  want = (x - mean) / np.sqrt(((x - mean) ** 2).mean((1, 3), keepdims=True) + 1e-5)
  got = LayerNorm(4, population=True)(jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  for kind in ("none", "workspace"):
    model = INN(config(kind, n=8, width=1, heads=1), 27, rngs=nnx.Rngs(0))
    model.eval()
    x = tokens(1, 8)
    changed = x.at[:, 2].set((x[:, 2] + 1) % 27)
    assert float(jnp.abs(model(changed)[:, 5:] - model(x)[:, 5:]).max()) > 1e-4, kind
