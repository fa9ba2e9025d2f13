"""inn_jax.ops.cpu_scan: the compiled CPU kernel against a float64 NumPy loop (values) and XLA's
autodiff of the sequential scan (gradients); jit, grad and vmap; its build, cache and fallback."""

import subprocess
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inn_jax.ops import cpu_scan, scan
from tests.test_scan import assert_trees_close


def rows_inputs(rows=3, length=21, width=13, state=5, per_row=True, seed=0):
  """Row inputs as the cores take them (float32 NumPy): u, dt, A, B, C, h0. width 13 and state 5
  leave vector remainders; dt in (0.01, 1.5)."""
  rng = np.random.default_rng(seed)
  f = lambda *s: rng.standard_normal(s).astype(np.float32)
  a_shape = (rows, width, state) if per_row else (width, state)
  return [f(rows, length, width), rng.uniform(0.01, 1.5, (rows, length, width)).astype(np.float32),
          -np.exp(0.5 * f(*a_shape)), f(rows, length, state), f(rows, length, state),
          f(rows, width, state)]


def plain(u_MLE, dt_MLE, A, B_MLS, C_MLS, h_MES, *, chunk_size):
  """The kernel as the bare recurrence (blocked_scan.scan's contract, A (E, S) shared or
  (M, E, S) per row): dt as given, no D, gate or bias."""
  rows, _, width = u_MLE.shape
  zeros = jnp.zeros((rows, width), jnp.float32)
  return cpu_scan.selective(u_MLE, dt_MLE, jnp.broadcast_to(A, (rows, *A.shape[-2:])), B_MLS,
                            C_MLS, zeros, None, zeros, h_MES, softplus=False,
                            chunk_size=chunk_size)


def numpy_rows(u, dt, A, B, C, h0):
  """The recurrence, one step at a time, in float64: (y_MLE, h_MES)."""
  u, dt, A, B, C, h = (np.asarray(x, np.float64) for x in (u, dt, A, B, C, h0))
  A = np.broadcast_to(A, h.shape)
  y = np.zeros_like(u)
  for t in range(u.shape[1]):
    h = np.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * u[:, t])[:, :, None] * B[:, t, None]
    y[:, t] = (h * C[:, t, None]).sum(-1)
  return y, h


@pytest.mark.parametrize("per_row", [True, False])
@pytest.mark.parametrize("length, chunk", [(21, 16), (16, 16), (5, 16), (21, 4), (1, 16)])
def test_values_match_numpy(per_row, length, chunk):
  args = rows_inputs(length=length, per_row=per_row)
  y, h = jax.jit(lambda *a: plain(*a, chunk_size=chunk))(*args)
  y_ref, h_ref = numpy_rows(*args)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5 * np.abs(y_ref).max())
  np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-5 * np.abs(h_ref).max())


def _grads(core, args, cotangents):
  def loss(*a):
    y, h = core(*a)
    return jnp.sum(y * cotangents[0]) + jnp.sum(h * cotangents[1])
  return jax.jit(jax.grad(loss, argnums=tuple(range(6))))(*args)


@pytest.mark.parametrize("per_row", [True, False])
@pytest.mark.parametrize("length, chunk", [(21, 16), (21, 4), (3, 16)])
def test_gradients_match_sequential_autodiff(per_row, length, chunk):
  """Every input's gradient (A's summed over rows when shared) against XLA's autodiff of the
  sequential loop: float32 both, so summation order only."""
  args = rows_inputs(length=length, per_row=per_row, seed=1)
  rng = np.random.default_rng(2)
  cotangents = (rng.standard_normal(args[0].shape).astype(np.float32),
                rng.standard_normal(args[5].shape).astype(np.float32))
  got = _grads(lambda *a: plain(*a, chunk_size=chunk), args, cotangents)
  want = _grads(scan._sequential, args, cotangents)
  assert [g.shape for g in got] == [a.shape for a in args]
  assert_trees_close(got, want, rtol=1e-4, scaled_atol=1e-5)


def test_vmap_runs_one_call_over_the_merged_rows():
  """vmap over a leading axis: one ffi call (no loop in the jaxpr), equal to each slice's call."""
  args = rows_inputs(rows=2, length=9, width=8, state=4, per_row=True)
  stacked = [np.stack([a, 0.5 * a]) if i != 1 else np.stack([a, a]) for i, a in enumerate(args)]
  f = lambda *a: plain(*a, chunk_size=4)
  jaxpr = str(jax.make_jaxpr(jax.vmap(f))(*stacked))
  assert jaxpr.count("ffi_call") == 1 and "while" not in jaxpr
  y, h = jax.vmap(f)(*stacked)
  for i in range(2):
    y_i, h_i = f(*(s[i] for s in stacked))
    np.testing.assert_allclose(y[i], y_i, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(h[i], h_i, rtol=1e-6, atol=1e-6)


def test_decay_underflow_and_nan_rows():
  """dt A far below exp's float32 range decays the state to 0 as the definition does; a NaN in
  one row's input reaches that row's outputs from its step on and no other row's."""
  args = rows_inputs(rows=2, length=6, width=8, state=4, per_row=True)
  args[1][0, 2] = 1e4  # dt A ~ -1e4 at step 2 of row 0: the state before it is forgotten.
  y, h = plain(*args, chunk_size=4)
  y_ref, h_ref = numpy_rows(*args)
  np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-5 * np.abs(y_ref).max())
  args[0][1, 3, 0] = np.nan
  y, h = plain(*args, chunk_size=4)
  assert np.isnan(y[1, 3:]).any(axis=-1).all() and not np.isnan(y[1, :3]).any()
  assert np.isfinite(y[0]).all() and np.isnan(h[1]).any() and np.isfinite(h[0]).all()


@pytest.fixture
def fresh_build(monkeypatch, tmp_path):
  """An empty kernel cache and no loaded kernel; afterwards the default build is reloaded."""
  monkeypatch.setenv("INN_JAX_KERNEL_CACHE", str(tmp_path / "cache"))
  cpu_scan._load.cache_clear()
  scan._cpu_kernel_checked.cache_clear()
  yield tmp_path / "cache"
  monkeypatch.undo()
  cpu_scan._load.cache_clear()
  scan._cpu_kernel_checked.cache_clear()


def test_build_is_cached_by_source_and_machine(fresh_build, monkeypatch):
  assert cpu_scan.available()
  (built,) = fresh_build.glob("cpu_scan-*.so")
  cpu_scan._load.cache_clear()
  def no_compile(*a, **k):
    raise AssertionError("rebuilt a cached kernel")
  monkeypatch.setattr(subprocess, "run", no_compile)
  assert cpu_scan.available() and list(fresh_build.glob("cpu_scan-*.so")) == [built]


def test_without_a_compiler_auto_runs_blocked_and_says_why(fresh_build, monkeypatch):
  monkeypatch.setenv("CXX", str(fresh_build / "no-such-compiler"))
  assert not cpu_scan.available()
  reason = cpu_scan.unavailable_reason()
  assert "\n" not in reason and "no-such-compiler" in reason and "CXX" in reason, reason
  args = rows_inputs()
  with pytest.raises(cpu_scan.Unavailable, match="scan_method='blocked'"):
    plain(*args, chunk_size=16)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert scan.auto_method() == "blocked" == scan.auto_method()
  ours = [w for w in caught if str(w.message).startswith("selective_scan:")]
  assert len(ours) == 1 and "no-such-compiler" in str(ours[0].message)


def test_auto_falls_back_when_the_kernel_disagrees(fresh_build, monkeypatch):
  real = cpu_scan.selective
  def off(*a, **k):
    y, h = real(*a, **k)
    return y * 1.01, h
  monkeypatch.setattr(cpu_scan, "selective", off)
  with pytest.warns(UserWarning, match="uses 'blocked' on this CPU: cpu_scan disagrees with "
                                       "blocked: max abs error"):
    assert scan.auto_method() == "blocked"


def test_auto_picks_the_kernel_where_it_builds(fresh_build):
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert scan.auto_method() == "cpu_kernel"


def test_softplus_and_gate_over_their_whole_range():
  """The kernel's own softplus, exp and silu (cpu_math.h) at arguments from -60 to 60, against
  NumPy float64: dt = softplus(delta + bias) from ~1e-26 (where log1p's small-argument form
  matters) to 60, gates from fully closed to fully open."""
  rows, length, width, state = 2, 24, 16, 4
  rng = np.random.default_rng(3)
  grid = np.linspace(-60.0, 60.0, length * width).reshape(length, width)
  delta = np.stack([grid, grid[::-1]]).astype(np.float32)
  z = np.stack([grid[::-1], grid]).astype(np.float32)
  u, B, C = (rng.standard_normal(s).astype(np.float32)
             for s in ((rows, length, width), (rows, length, state), (rows, length, state)))
  A = -np.exp(0.3 * rng.standard_normal((rows, width, state))).astype(np.float32) / 60
  D, bias = (rng.standard_normal((rows, width)).astype(np.float32) for _ in range(2))
  h0 = rng.standard_normal((rows, width, state)).astype(np.float32)
  y, h = cpu_scan.selective(u, delta, A, B, C, D, z, bias, h0, softplus=True, chunk_size=16)
  x = np.asarray(delta, np.float64) + bias[:, None]
  dt = np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))
  y_ref, h_ref = numpy_rows(u, dt, A, B, C, h0)
  z64 = np.asarray(z, np.float64)
  y_ref = (y_ref + D[:, None] * u) * z64 / (1 + np.exp(-z64))
  np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-5 * np.abs(h_ref).max())
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5 * np.abs(y_ref).max())
