"""method="auto" on a GPU the Pallas kernel supports: the kernel is checked against "chunked" once
per device kind and process, and "auto" falls back to "chunked", with one warning, when it fails
to compile or disagrees. On CPU: is_supported patched, the kernel in interpret mode or faked."""

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.core import Primitive

from inn_jax.ops import pallas_scan, pallas_scan_triton, scan
from inn_jax.train import runner

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "h0")
WARNING = r"^selective_scan: method='auto' uses 'chunked' on cpu: the Pallas kernel "


@pytest.fixture(autouse=True)
def fresh_check(monkeypatch):
  """Every test starts and ends with no check cached, the kernel reported as supported."""
  scan._pallas_checked.cache_clear()
  monkeypatch.setattr(pallas_scan, "is_supported", lambda: True)
  yield
  scan._pallas_checked.cache_clear()


def _auto_twice():
  """auto_method() called twice: (first, second result, our warnings from each call)."""
  ours = lambda caught: [w for w in caught if str(w.message).startswith("selective_scan:")]
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    first = scan.auto_method()
    n_first = len(caught)
    second = scan.auto_method()
  return first, second, ours(caught[:n_first]), ours(caught[n_first:])


def _assert_falls_back(match):
  first, second, warned_first, warned_second = _auto_twice()
  assert first == second == "chunked"
  assert len(warned_first) == 1 and not warned_second  # The second call hits the cache.
  message = str(warned_first[0].message)
  assert "\n" not in message and re.search(WARNING + match, message), message
  assert warned_first[0].filename == __file__  # Points at auto_method's caller.


def _reference(**kw):
  """What a working kernel returns (kw as scan._local passes them to the Pallas kernel)."""
  return scan.selective_scan(**kw, method="sequential")


def _y_scaled(factor):
  def kernel(**kw):
    y, h = _reference(**kw)
    return y * factor, h
  return kernel


def _grad_of_B_scaled(**kw):
  """Right values, wrong backward: the gradient of B 0.1% too large."""
  arrays = {k: kw.pop(k) for k in NAMES if kw.get(k) is not None}

  @jax.custom_vjp
  def f(arrays):
    return _reference(**arrays, **kw)

  def fwd(arrays):
    return jax.vjp(lambda a: _reference(**a, **kw), arrays)

  def bwd(pullback, cotangents):
    (grads,) = pullback(cotangents)
    return ({**grads, "B": grads["B"] * 1.001},)

  f.defvjp(fwd, bwd)
  return f(arrays)


def _raises_while_tracing(**kw):
  raise ValueError("Mosaic lowering failed: unsupported layout\n  with details on this line")


_unlowerable = Primitive("unlowerable_kernel")  # No lowering rule on any platform.
_unlowerable.def_abstract_eval(lambda aval: aval)


def _fails_to_lower(**kw):
  """Traces and differentiates (a custom_vjp), then fails as XLA lowers the program."""
  @jax.custom_vjp
  def f(u):
    return _unlowerable.bind(u)

  f.defvjp(lambda u: (_unlowerable.bind(u), None), lambda _, g: (g,))
  y, h = _reference(**kw)
  return f(y), h


def test_working_kernel_passes_the_check_under_jit_and_a_mesh(monkeypatch):
  """The real kernel (interpret mode), first asked for while tracing under jax.set_mesh."""
  # Interpret mode is slow: a tiny problem that still spans two kernel chunks and a remainder.
  monkeypatch.setattr(pallas_scan_triton, "DEFAULT_CHUNK", 4)
  for name, value in dict(_CHECK_LEAD=(2, 3), _CHECK_LENGTH=9, _CHECK_WIDTH=4,
                          _CHECK_STATE=2).items():
    monkeypatch.setattr(scan, name, value)
  seen = []

  @jax.jit
  def traced(x):
    seen.append(scan.auto_method())
    return x + 1

  mesh = jax.make_mesh((2, 2), ("data", "neuron"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  with warnings.catch_warnings():
    warnings.filterwarnings("error", message="selective_scan:")
    with jax.set_mesh(mesh):
      np.testing.assert_array_equal(traced(jnp.zeros(4)), np.ones(4))
  assert seen == ["pallas"]
  assert scan._pallas_checked.cache_info().misses == 1


@pytest.mark.slow
def test_working_kernel_passes_the_full_size_check():
  """The check's own problem (minutes in interpret mode)."""
  first, second, warned_first, warned_second = _auto_twice()
  assert first == second == "pallas" and not warned_first and not warned_second


def test_error_within_float32_rounding_passes(monkeypatch):
  monkeypatch.setattr(pallas_scan, "selective_scan", _y_scaled(1 + 1e-6))
  assert _auto_twice()[:2] == ("pallas", "pallas")


@pytest.mark.parametrize("kernel,match", [
    (_raises_while_tracing,
     r"failed to compile: ValueError: Mosaic lowering failed: unsupported layout$"),
    (_fails_to_lower, r"failed to compile: NotImplementedError: .*unlowerable_kernel"),
    (_y_scaled(1.001), r"disagrees with chunked: max abs error \S+ in y$"),
    (_y_scaled(np.nan), r"disagrees with chunked: max abs error inf in y$"),
    (_grad_of_B_scaled, r"disagrees with chunked: max abs error \S+ in gradient of B$"),
], ids=["raises_while_tracing", "fails_to_lower", "y_off", "y_nan", "grad_of_B_off"])
def test_broken_kernel_falls_back_to_chunked_with_one_warning(monkeypatch, kernel, match):
  monkeypatch.setattr(pallas_scan, "selective_scan", kernel)
  _assert_falls_back(match)


def test_every_backend_the_device_may_pick_is_checked(monkeypatch):
  """On Hopper method="pallas" runs Mosaic or Triton by the width (pallas_scan.backend_for): the
  check runs both, and one that disagrees sends "auto" to chunked, naming it."""
  monkeypatch.setattr(pallas_scan, "available_backends", lambda: ("mosaic", "triton"))
  seen = []

  def kernel(backend, **kw):
    seen.append(backend)
    y, h = _reference(**kw)
    return (y * 1.01 if backend == "triton" else y), h

  monkeypatch.setattr(pallas_scan, "selective_scan", kernel)
  _assert_falls_back(r"disagrees \(triton\) with chunked: max abs error \S+ in y$")
  assert seen == ["mosaic", "triton"]


def _inputs(lead=(2, 2), length=6, width=4, state=3):
  rng = np.random.default_rng(1)
  n = lambda *shape: rng.standard_normal(shape).astype(np.float32)
  return dict(u=n(*lead, length, width), delta=n(*lead, length, width), A=-np.exp(n(width, state)),
              B=n(*lead, length, state), C=n(*lead, length, state), D=n(width),
              z=n(*lead, length, width), delta_bias=n(width), h0=n(*lead, width, state))


def test_auto_inside_jit_and_shard_map_runs_chunked_after_a_bad_check(monkeypatch):
  """The check, first reached inside shard_map inside jit under a mesh, sees the broken kernel:
  the traced program then runs "chunked", not the kernel."""
  monkeypatch.setattr(pallas_scan, "selective_scan", _y_scaled(1.1))
  args = _inputs()
  P = jax.sharding.PartitionSpec
  rows = P("data", "neuron")

  def local(u, delta, B, C, z, h0):
    return scan.selective_scan(u, delta, args["A"], B, C, args["D"], z, args["delta_bias"], True,
                               h0=h0, return_state=True, method="auto")

  mesh = jax.make_mesh((2, 2), ("data", "neuron"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  names = ("u", "delta", "B", "C", "z", "h0")
  with pytest.warns(UserWarning, match=WARNING + "disagrees"), jax.set_mesh(mesh):
    fn = jax.jit(jax.shard_map(local, in_specs=(rows,) * 6, out_specs=(rows, rows)))
    y, h = fn(*[args[k] for k in names])
  want_y, want_h = scan.selective_scan(**args, delta_softplus=True, return_state=True,
                                       method="chunked")
  np.testing.assert_allclose(y, want_y, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(h, want_h, rtol=1e-6, atol=1e-6)


def test_explicit_pallas_skips_the_check_and_raises(monkeypatch):
  monkeypatch.setattr(pallas_scan, "selective_scan", _raises_while_tracing)
  with pytest.raises(ValueError, match="Mosaic lowering failed"):
    jax.jit(lambda a: scan.selective_scan(**a, method="pallas"))(_inputs())
  assert scan._pallas_checked.cache_info().misses == 0


def test_unsupported_backend_runs_no_check(monkeypatch):
  monkeypatch.setattr(pallas_scan, "is_supported", lambda: False)
  monkeypatch.setattr(pallas_scan, "selective_scan", _raises_while_tracing)
  assert scan.auto_method() == scan._cpu_kernel_checked()  # CPU: tests/test_cpu_scan.py.
  assert scan._pallas_checked.cache_info().misses == 0


def test_results_json_records_the_method_after_fallback(monkeypatch):
  monkeypatch.setattr(pallas_scan, "selective_scan", _raises_while_tracing)
  with pytest.warns(UserWarning, match=WARNING + "failed to compile"):
    assert runner.scan_method({"scan_method": "auto"}) == "chunked"
  assert runner.scan_method({"scan_method": "sequential"}) == "sequential"
  assert runner.scan_method({}) is None
