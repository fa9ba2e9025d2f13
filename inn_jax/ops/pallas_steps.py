"""Per-step math of the fused selective scan, shared by its Pallas backends (pallas_scan_mosaic,
pallas_scan_triton), which import it; it imports nothing of the package.

A program's state is h (*G, E, S): E channels of S states, with G empty (the Mosaic warpgroup's
(128, S) tile) or one axis of neurons folded into the program (Triton's (neurons, channels, S)
block). Per-channel rows (u, dt, z, D, ...) are (*G, E); per-row ones (B_t, C_t) are (*G, S):
each neuron of the block has its own. Broadcasts are explicit (broadcast_in_dim): Mosaic GPU
lowers those, not size-1 reshapes. Rows arrive as float32 via row(name), None when absent.

The decay is exp2(dt * A2) with A2 = A * log2(e) scaled once per program (mamba_ssm's exp2f):
one multiply per element fewer than exp(dt * A), and the same value up to rounding.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

LOG2E = math.log2(math.e)


def per_channel(x, shape):
  """(*G, E) -> (*G, E, S)."""
  return jax.lax.broadcast_in_dim(x, shape, tuple(range(len(shape) - 1)))


def per_state(x, shape):
  """(*G, S) -> (*G, E, S)."""
  return jax.lax.broadcast_in_dim(x, shape, (*range(len(shape) - 2), len(shape) - 1))


def log1p(x):
  # Mosaic GPU has no log1p; this is exact to float32 rounding (Goldberg's correction).
  w = 1.0 + x
  return jnp.where(w == 1.0, x, jnp.log(w) * (x / (w - 1.0)))


def softplus(x):
  return jnp.maximum(x, 0.0) + log1p(jnp.exp(-jnp.abs(x)))


def sigmoid(x):
  return 1.0 / (1.0 + jnp.exp(-x))


def row_inputs(row, bias_E, use_softplus, valid=None, outputs=True):
  """One step's inputs: u, pre (delta + bias), dt, B, and C, z when outputs; valid (a 0/1
  scalar, or None) zeroes dt on padded steps, which then leave the state unchanged."""
  x = dict(u=row("u"), B=row("B"), C=row("C") if outputs else None,
           z=row("z") if outputs else None)
  x["pre"] = row("delta") if bias_E is None else row("delta") + bias_E
  x["dt"] = softplus(x["pre"]) if use_softplus else x["pre"]
  if valid is not None:
    x["dt"] = x["dt"] * valid
  return x


def decay(A2_ES, x):
  """exp(dt A) as exp2(dt A2): the step's one exponential per element."""
  return jnp.exp2(per_channel(x["dt"], A2_ES.shape) * A2_ES)


def update(a_ES, h_ES, x):
  """The next state a h + dt u B, given the decay a."""
  shape = h_ES.shape
  return a_ES * h_ES + per_channel(x["dt"] * x["u"], shape) * per_state(x["B"], shape)


def advance(h_ES, A2_ES, x):
  """(the decay, the next state)."""
  a_ES = decay(A2_ES, x)
  return a_ES, update(a_ES, h_ES, x)


def output(h_ES, x, D_E, gate=True):
  y_E = jnp.sum(h_ES * per_state(x["C"], h_ES.shape), axis=-1)
  if D_E is not None:
    y_E = y_E + D_E * x["u"]
  if gate and x["z"] is not None:
    y_E = y_E * x["z"] * sigmoid(x["z"])
  return y_E


def bwd_step(h_prev_ES, a_ES, A_ES, x, D_E, g0_E, carry, use_softplus, valid=None):
  """One reverse step, given the state before it and its decay a (computed once, in the
  recompute): carry (lam, gA, gD, gbias) -> (carry, rows gu, gdelta, gB (*G, S), gC[, gz]).
  valid (0/1 or None) zeroes the cotangent of padded steps, whose writes the true steps redo."""
  lam_ES, gA_ES, gD_E, gbias_E = carry
  shape = A_ES.shape
  if valid is not None:
    g0_E = g0_E * valid
  h_ES = update(a_ES, h_prev_ES, x)
  out = {}
  if x["z"] is not None:  # y = y0 * silu(z): split the cotangent between y0 and z.
    z_E, s_E = x["z"], sigmoid(x["z"])
    out["gz"] = g0_E * output(h_ES, x, D_E, gate=False) * s_E * (1.0 + z_E * (1.0 - s_E))
    g0_E = g0_E * z_E * s_E
  g0_ES = per_channel(g0_E, shape)
  lam_ES = lam_ES + g0_ES * per_state(x["C"], shape)
  out["gC"] = jnp.sum(g0_ES * h_ES, axis=-2)
  out["gB"] = jnp.sum(lam_ES * per_channel(x["dt"] * x["u"], shape), axis=-2)
  lamB_E = jnp.sum(lam_ES * per_state(x["B"], shape), axis=-1)
  q_ES = lam_ES * a_ES * h_prev_ES
  gA_ES = gA_ES + q_ES * per_channel(x["dt"], shape)
  gpre_E = jnp.sum(q_ES * A_ES, axis=-1) + x["u"] * lamB_E
  if use_softplus:
    gpre_E = gpre_E * sigmoid(x["pre"])
  if valid is not None:
    gpre_E = gpre_E * valid
  out["gu"] = x["dt"] * lamB_E
  if D_E is not None:
    out["gu"] = out["gu"] + g0_E * D_E
    gD_E = gD_E + g0_E * x["u"]
  out["gdelta"] = gpre_E
  return (a_ES * lam_ES, gA_ES, gD_E, gbias_E + gpre_E), out
