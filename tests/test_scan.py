"""selective_scan: every method against a float64 NumPy loop and against each other."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inn_jax.ops import selective_scan
from tests.trees import assert_trees_close

# The methods that run on CPU (cpu_kernel: the compiled kernel, not XLA, but tested alike).
XLA_METHODS = ("sequential", "associative", "chunked", "chunked_sequential", "blocked", "cpu_kernel")


def make_inputs(batch=2, length=7, width=5, state=3, seed=0, dtype=jnp.float32):
  ks = jax.random.split(jax.random.key(seed), 9)
  n = lambda k, s, scale=1.0: (scale * jax.random.normal(k, s)).astype(dtype)
  return dict(
      u=n(ks[0], (batch, length, width)), delta=n(ks[1], (batch, length, width), 0.5),
      A=-jnp.exp(n(ks[2], (width, state), 0.5)).astype(jnp.float32),
      B=n(ks[3], (batch, length, state)), C=n(ks[4], (batch, length, state)),
      D=n(ks[5], (width,)), z=n(ks[6], (batch, length, width)), delta_bias=n(ks[7], (width,), 0.3),
      h0=n(ks[8], (batch, width, state)).astype(jnp.float32))


def numpy_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, h0=None):
  """The definition, one step at a time, in float64."""
  f = lambda x: None if x is None else np.asarray(x, np.float64)
  u, delta, A, B, C, D, z, delta_bias, h0 = map(f, (u, delta, A, B, C, D, z, delta_bias, h0))
  batch, length, width = u.shape
  dt = delta + (0 if delta_bias is None else delta_bias)
  if delta_softplus:
    dt = np.log1p(np.exp(dt))
  h = np.zeros((batch, width, A.shape[1])) if h0 is None else h0.copy()
  y = np.zeros_like(u)
  for t in range(length):
    h = np.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
    y[:, t] = (h * C[:, t, None, :]).sum(-1)
  if D is not None:
    y = y + D * u
  if z is not None:
    y = y * z / (1 + np.exp(-z))
  return y, h


def population_inputs(batch=2, neurons=3, length=7, width=5, state=3, seed=0):
  """Inputs with leading (B, N) axes and one A, D, delta_bias per neuron."""
  flat = make_inputs(batch * neurons, length, width, state, seed)
  inp = {k: flat[k].reshape(batch, neurons, *flat[k].shape[1:])
         for k in ("u", "delta", "B", "C", "z", "h0")}
  ks = jax.random.split(jax.random.key(seed + 1), 3)
  inp.update(A=-jnp.exp(0.5 * jax.random.normal(ks[0], (neurons, width, state))),
             D=jax.random.normal(ks[1], (neurons, width)),
             delta_bias=0.3 * jax.random.normal(ks[2], (neurons, width)))
  return inp


def numpy_population(inp):
  """numpy_scan of each neuron's rows with that neuron's parameters: (y_BNLE, h_BNES)."""
  outs = [numpy_scan(*(inp[k][:, n] for k in ("u", "delta")), inp["A"][n], inp["B"][:, n],
                     inp["C"][:, n], inp["D"][n], inp["z"][:, n], inp["delta_bias"][n], True,
                     inp["h0"][:, n]) for n in range(inp["A"].shape[0])]
  return tuple(np.stack(x, 1) for x in zip(*outs))


def population_loss(method, **kw):
  def f(a):
    y, h = selective_scan(a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"], a["z"],
                          a["delta_bias"], True, h0=a["h0"], return_state=True, method=method,
                          **kw)
    return ((y * jnp.sin(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)).sum()
            + (h * jnp.cos(jnp.arange(h.size, dtype=jnp.float32)).reshape(h.shape)).sum())
  return f


def run(method, inp, **kw):
  args = {k: inp[k] for k in ("u", "delta", "A", "B", "C")}
  return selective_scan(**args, **kw, method=method, chunk_size=4)


@pytest.mark.parametrize("method", XLA_METHODS)
@pytest.mark.parametrize("length", [1, 7, 13])
@pytest.mark.parametrize("full", [True, False])
def test_forward_matches_numpy(method, length, full):
  inp = make_inputs(length=length)
  opt = dict(D=inp["D"], z=inp["z"], delta_bias=inp["delta_bias"], delta_softplus=True,
             h0=inp["h0"]) if full else {}
  y, h = run(method, inp, return_state=True, **opt)
  y_ref, h_ref = numpy_scan(*(inp[k] for k in ("u", "delta", "A", "B", "C")), **opt)
  if not full:  # Without softplus, dt may be negative: exp(dt*A) grows; still well-defined.
    assert np.isfinite(y_ref).all()
  # float32 rounding accumulates over <= 13 steps of O(1) values: 1e-5 relative is ~100 ulps.
  assert_trees_close((y, h), (y_ref, h_ref), rtol=1e-5, scaled_atol=1e-5)
  assert h.dtype == jnp.float32


def loss_fn(method, keys):
  def f(args):
    y, h = selective_scan(args["u"], args["delta"], args["A"], args["B"], args["C"], args["D"],
                          args["z"], args["delta_bias"], True, h0=args["h0"], return_state=True,
                          method=method, chunk_size=4)
    w_y = jnp.sin(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
    w_h = jnp.cos(jnp.arange(h.size, dtype=jnp.float32)).reshape(h.shape)
    return (y * w_y).sum() + (h * w_h).sum()
  return f


@pytest.mark.parametrize("method", XLA_METHODS[1:])
@pytest.mark.parametrize("length", [1, 7, 13])
def test_gradients_match_sequential(method, length):
  inp = make_inputs(length=length)
  g = jax.grad(loss_fn(method, inp))(inp)
  g_ref = jax.grad(loss_fn("sequential", inp))(inp)
  chex.assert_trees_all_equal_shapes(g, inp)
  # The methods sum the same float32 terms in other orders (a tree, chunks, a hand-written
  # VJP), and a gradient sums over every step: 1e-4 relative, 1e-5 of each leaf's largest.
  assert_trees_close(g, g_ref, rtol=1e-4, scaled_atol=1e-5)


@pytest.mark.parametrize("method", XLA_METHODS)
def test_population_with_per_neuron_parameters_matches_numpy(method):
  """u (B, N, L, E) with A, D, delta_bias per neuron = each neuron's own scan."""
  inp = population_inputs(length=9)
  y, h = selective_scan(inp["u"], inp["delta"], inp["A"], inp["B"], inp["C"], inp["D"], inp["z"],
                        inp["delta_bias"], True, h0=inp["h0"], return_state=True, method=method,
                        chunk_size=4)
  y_ref, h_ref = numpy_population(inp)
  assert y.shape == (2, 3, 9, 5) and h.shape == (2, 3, 5, 3)
  # float32 against float64 over 9 steps of O(1) values, as test_forward_matches_numpy.
  assert_trees_close((y, h), (y_ref, h_ref), rtol=1e-5, scaled_atol=1e-5)


@pytest.mark.parametrize("method", XLA_METHODS[1:])
def test_population_gradients_match_sequential(method):
  inp = population_inputs(length=9)
  g = jax.grad(population_loss(method, chunk_size=4))(inp)
  g_ref = jax.grad(population_loss("sequential"))(inp)
  chex.assert_trees_all_equal_shapes(g, inp)
  # Summation order only, as test_gradients_match_sequential.
  assert_trees_close(g, g_ref, rtol=1e-4, scaled_atol=1e-5)


def test_sequential_gradient_matches_numpy_finite_differences():
  """Directional derivatives of the float64 NumPy loop check the reference's gradients."""
  inp = make_inputs(length=6)
  g = jax.grad(loss_fn("sequential", inp))(inp)

  def np_loss(args):
    y, h = numpy_scan(args["u"], args["delta"], args["A"], args["B"], args["C"], args["D"],
                      args["z"], args["delta_bias"], True, args["h0"])
    w_y = np.sin(np.arange(y.size, dtype=np.float32)).reshape(y.shape)
    w_h = np.cos(np.arange(h.size, dtype=np.float32)).reshape(h.shape)
    return (y * w_y).sum() + (h * w_h).sum()

  rng = np.random.default_rng(0)
  base = {k: np.asarray(v, np.float64) for k, v in inp.items()}
  for k in inp:
    v = rng.standard_normal(base[k].shape)
    eps = 1e-6
    plus = dict(base, **{k: base[k] + eps * v})
    minus = dict(base, **{k: base[k] - eps * v})
    fd = (np_loss(plus) - np_loss(minus)) / (2 * eps)
    ad = float((np.asarray(g[k], np.float64) * v).sum())
    # Central differences in float64 are accurate to ~1e-8; the gap is float32 autodiff rounding.
    assert abs(ad - fd) <= 1e-4 * max(1.0, abs(fd)), (k, ad, fd)


@pytest.mark.parametrize("method", XLA_METHODS)
def test_bfloat16_inputs(method):
  inp = make_inputs(length=13, dtype=jnp.bfloat16)
  y, h = run(method, inp, D=inp["D"], z=inp["z"], delta_bias=inp["delta_bias"],
             delta_softplus=True, h0=inp["h0"], return_state=True)
  assert y.dtype == jnp.bfloat16 and h.dtype == jnp.float32
  y_ref, h_ref = numpy_scan(*(inp[k] for k in ("u", "delta", "A", "B", "C")), inp["D"], inp["z"],
                            inp["delta_bias"], True, inp["h0"])
  # Same bf16 inputs, float32 arithmetic: the state is float32-exact to ~1e-5; y is rounded to
  # bf16 once at the end (relative error <= 2^-9), so allow 2^-8 relative.
  np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-5 * np.abs(h_ref).max())
  np.testing.assert_allclose(np.asarray(y, np.float64), y_ref, rtol=2 ** -8,
                             atol=1e-5 * np.abs(y_ref).max())


def test_chunk_sizes_agree_and_state_continues():
  """Two chained calls through h0 equal one call: the state carries across boundaries."""
  inp = make_inputs(length=13)
  args = [inp[k] for k in ("u", "delta", "A", "B", "C")]
  kw = dict(delta_softplus=True, return_state=True, method="chunked", chunk_size=5)
  y_full, h_full = selective_scan(*args, **kw)
  cut = 6
  first = [a[:, :cut] if a.ndim == 3 else a for a in args]
  second = [a[:, cut:] if a.ndim == 3 else a for a in args]
  y1, h1 = selective_scan(*first, **kw)
  y2, h2 = selective_scan(*second, h0=h1, **kw)
  # The cut moves the chunk boundaries: the same float32 terms summed in another order.
  chex.assert_trees_all_close((jnp.concatenate([y1, y2], 1), h2), (y_full, h_full), rtol=1e-5,
                              atol=1e-6)


@pytest.mark.parametrize("method", ["chunked", "cpu_kernel"])
def test_vmap_over_neurons(method):
  inp = make_inputs(length=7)
  stack = lambda x: jnp.stack([x, 2 * x])
  f = lambda u: selective_scan(u, inp["delta"], inp["A"], inp["B"], inp["C"], method=method,
                               chunk_size=4)
  y = jax.vmap(f)(stack(inp["u"]))
  np.testing.assert_allclose(y[1], f(2 * inp["u"]), rtol=1e-6, atol=1e-6)


def test_chunked_memory_is_bounded():
  """At L=2048 the chunked fwd+bwd needs at most a quarter of the associative scan's temp memory."""
  inp = make_inputs(batch=2, length=2048, width=16, state=16)

  def temp_bytes(method):
    def f(u, delta, B, C):
      return selective_scan(u, delta, inp["A"], B, C, method=method, chunk_size=64).sum()
    g = jax.jit(jax.grad(f, argnums=(0, 1, 2, 3)))
    compiled = g.lower(inp["u"], inp["delta"], inp["B"], inp["C"]).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  assoc = temp_bytes("associative")
  for method in ("chunked", "chunked_sequential", "blocked", "cpu_kernel"):
    assert temp_bytes(method) * 4 <= assoc, (method, temp_bytes(method), assoc)


@pytest.mark.parametrize("method", [*XLA_METHODS, "pallas"])
def test_one_sequence_without_a_leading_axis(method):
  """u (L, E), as the docstring's (*lead, L, E) with no lead: y, the final state and every
  gradient are the batch's first row's."""
  inp = {k: (v[0] if v.ndim == 3 and k not in ("A",) else v)
         for k, v in make_inputs(batch=1, length=9).items()}
  names = ("u", "delta", "B", "C", "z", "h0")
  kw = dict(A=inp["A"], D=inp["D"], delta_bias=inp["delta_bias"], delta_softplus=True,
            return_state=True, method=method, chunk_size=4)

  def loss(batched, *rows):
    args = {n: (r[None] if batched else r) for n, r in zip(names, rows)}
    y, h = selective_scan(**args, **kw)
    return jnp.sum(jnp.sin(y)) + jnp.sum(h ** 2), (y[0] if batched else y)

  rows = [inp[n] for n in names]
  (value, y), grads = jax.value_and_grad(lambda *r: loss(False, *r), argnums=range(6),
                                         has_aux=True)(*rows)
  assert y.shape == inp["u"].shape
  want = jax.value_and_grad(lambda *r: loss(True, *r), argnums=range(6), has_aux=True)(*rows)
  assert_trees_close(((value, y), grads), want, rtol=1e-6, scaled_atol=1e-6)


@pytest.mark.parametrize("bad,error,match", [
    (dict(method="cuda"), ValueError, "method='cuda' is not one of"),
    (dict(chunk_size=0), ValueError, "chunk_size must be a positive int"),
    (dict(u=jnp.ones((5,))), ValueError, r"u must be \(\*lead, length, channels\)"),
    (dict(u=jnp.ones((2, 0, 5))), ValueError, "u must be .* one step"),
    (dict(delta=jnp.ones((2, 7, 4))), ValueError, r"delta must have shape \(2, 7, 5\)"),
    (dict(B=jnp.ones((2, 6, 3))), ValueError, r"B must have shape \(2, 7, 3\)"),
    (dict(C=jnp.ones((1, 7, 3))), ValueError, r"C must have shape \(2, 7, 3\)"),
    (dict(D=jnp.ones(4)), ValueError, r"D must have shape \(5,\)"),
    (dict(z=jnp.ones((2, 7))), ValueError, r"z must have shape \(2, 7, 5\)"),
    (dict(delta_bias=jnp.ones((2, 5))), ValueError, r"delta_bias must have shape \(5,\)"),
    (dict(h0=jnp.ones((2, 5, 2))), ValueError, r"h0 must have shape \(2, 5, 3\)"),
    (dict(A=-jnp.ones((3, 5, 3))), ValueError,
     r"A must be \(channels=5, state\) or carry the last leading"),
    (dict(A=-jnp.ones(5)), ValueError, r"A must be \(channels=5, state\)"),
    (dict(u=jnp.ones((2, 7, 5), jnp.int32)), TypeError, "u must be floating point"),
    (dict(D=[1.0] * 5), TypeError, "D must be an array, got list"),
    (dict(C=None), TypeError, "C is required"),
])
def test_bad_input_names_the_problem(bad, error, match):
  """Every argument's wrong shape or dtype fails in the checks, naming the argument, eagerly and
  under jit (where the checks run at trace time), not inside XLA."""
  inp = make_inputs()
  args = {**{k: inp[k] for k in ("u", "delta", "A", "B", "C")}, **bad}
  with pytest.raises(error, match=match):
    selective_scan(**args)
  arrays = {k: v for k, v in args.items() if isinstance(v, jax.Array)}
  with pytest.raises(error, match=match):
    jax.jit(lambda a: selective_scan(**a, **{k: v for k, v in args.items() if k not in a}))(
        arrays)


def test_checks_add_nothing_to_the_traced_computation(monkeypatch):
  """The argument checks read static shapes only: the jaxpr of a jitted scan is the same
  with them switched off."""
  inp = make_inputs(length=6)

  def jaxpr():  # A new function each time: make_jaxpr caches traces by function.
    f = lambda a: selective_scan(**a, delta_softplus=True, return_state=True, method="blocked",
                                 chunk_size=4)
    return str(jax.make_jaxpr(f)(inp))

  with_checks = jaxpr()
  monkeypatch.setattr("inn_jax.ops.scan_args.check", lambda *a, **k: None)
  assert jaxpr() == with_checks


@pytest.mark.parametrize("method", ["pallas", "blocked", "cpu_kernel"])
def test_population_runs_per_shard_under_a_mesh(method):
  """(B, N) rows with per-neuron parameters split over (data, neuron): each device scans its own
  neurons with their own parameters; forward and gradients equal the unsplit sequential scan."""
  inp = population_inputs(batch=2, neurons=4, length=5, width=4, state=2)
  mesh = jax.make_mesh((2, 2), ("data", "neuron"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  g_ref = jax.grad(population_loss("sequential"))(inp)
  with jax.set_mesh(mesh):
    f = jax.jit(jax.value_and_grad(population_loss(method)))
    text = f.lower(inp).as_text()
    loss, g = f(inp)
  assert "shard_map" in text or "sdy.manual_computation" in text
  np.testing.assert_allclose(loss, population_loss("sequential")(inp), rtol=1e-5)
  # Summation order only, as test_gradients_match_sequential.
  assert_trees_close(g, g_ref, rtol=1e-4, scaled_atol=1e-5)


@pytest.mark.parametrize("method", ["pallas", "blocked", "cpu_kernel"])
def test_runs_per_shard_under_a_mesh(method):
  """Under a (data, neuron) mesh, loops over rows run on each device's rows via shard_map."""
  inp = make_inputs(batch=4, length=5, width=4, state=2)
  args = [inp[k] for k in ("u", "delta", "A", "B", "C")]
  kw = dict(D=inp["D"], z=inp["z"], delta_bias=inp["delta_bias"], delta_softplus=True,
            h0=inp["h0"], return_state=True)
  y_ref, h_ref = selective_scan(*args, **kw, method="sequential")
  mesh = jax.make_mesh((2, 2), ("data", "neuron"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  with jax.set_mesh(mesh):
    f = jax.jit(lambda *a: selective_scan(*a, **kw, method=method))
    lowered = f.lower(*args)
    y, h = f(*args)
  assert "shard_map" in lowered.as_text() or "sdy.manual_computation" in lowered.as_text()
  # Each device runs the same float32 steps on its rows: summation order only.
  assert_trees_close((y, h), (y_ref, h_ref), rtol=1e-5, scaled_atol=1e-5)
