"""The selective scan's argument contract, shared by every path (inn_jax.ops.scan, pallas_scan).

    u, delta, z  (*lead, L, E)      B, C  (*lead, L, S)      h0, final state  (*lead, E, S)
    A  (*P, E, S)                   D, delta_bias  (*P, E)

`lead` is any leading axes (none: one sequence; batch; or batch x neurons); the parameters'
leading axes P are empty (shared by every row) or the last len(P) axes of `lead` (for example one A per neuron:
lead (B, N), P (N,)). Checks run in plain Python on static shapes and dtypes, so bad input
fails with the argument's name before any tracing (under jit they run once, at trace time, and
add nothing to the compiled computation).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

ROWS = ("u", "delta", "B", "C", "z", "h0")  # Arguments with the `lead` axes.
PARAMS = ("A", "D", "delta_bias")           # Arguments with the P axes.
_REQUIRED = ("u", "delta", "A", "B", "C")


def check(u, delta, A, B, C, D, z, delta_bias, h0, *, methods, method, chunk_size):
  if method not in methods:
    raise ValueError(f"selective_scan: method={method!r} is not one of {methods}.")
  if not (isinstance(chunk_size, int) and chunk_size > 0):
    raise ValueError(f"selective_scan: chunk_size must be a positive int, got {chunk_size!r}.")
  given = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, h0=h0)
  for name, x in given.items():
    if x is None:
      if name in _REQUIRED:
        raise TypeError(f"selective_scan: {name} is required, got None.")
    elif not (hasattr(x, "shape") and hasattr(x, "dtype")):
      raise TypeError(f"selective_scan: {name} must be an array, got {type(x).__name__}.")
    elif not jnp.issubdtype(x.dtype, jnp.floating):  # An integer u would come back truncated.
      raise TypeError(f"selective_scan: {name} must be floating point, got dtype {x.dtype}.")
  if u.ndim < 2 or u.shape[-2] < 1:
    raise ValueError(f"selective_scan: u must be (*lead, length, channels) with at least one "
                     f"step, got shape {tuple(u.shape)}.")
  lead, (length, width) = tuple(u.shape[:-2]), u.shape[-2:]
  p = A.ndim - 2
  if A.ndim < 2 or A.shape[-2] != width or p > len(lead) or (
      p and tuple(A.shape[:-2]) != lead[len(lead) - p:]):
    raise ValueError(f"selective_scan: A must be (channels={width}, state) or carry the last "
                     f"leading axes of u {lead} before them, got {tuple(A.shape)}.")
  state, params = A.shape[-1], tuple(A.shape[:-2])
  want = {"delta": (delta, u.shape), "B": (B, (*lead, length, state)),
          "C": (C, (*lead, length, state)), "D": (D, (*params, width)), "z": (z, u.shape),
          "delta_bias": (delta_bias, (*params, width)), "h0": (h0, (*lead, width, state))}
  for name, (x, shape) in want.items():
    if x is not None and tuple(x.shape) != tuple(shape):
      raise ValueError(f"selective_scan: {name} must have shape {tuple(shape)} "
                       f"(from u {tuple(u.shape)} and A {tuple(A.shape)}), got {tuple(x.shape)}.")


def param_axes(A) -> int:
  """How many of u's leading axes the parameters carry (0: shared by every row)."""
  return A.ndim - 2



def one_sequence(fn, u, delta, A, B, C, D, z, delta_bias, delta_softplus, h0, **kw):
  """fn (a selective_scan) on one sequence, u (L, E): run as a batch of one, the axis dropped
  from the results."""
  lead = lambda x: None if x is None else x[None]
  out = fn(u[None], delta[None], A, B[None], C[None], D, lead(z), delta_bias, delta_softplus,
           h0=lead(h0), **kw)
  return jax.tree.map(lambda x: x[0], out)
