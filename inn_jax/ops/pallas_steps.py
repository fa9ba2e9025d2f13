"""Per-step math of the fused selective scan, shared by its Pallas backends (pallas_scan_mosaic,
pallas_scan_triton), which import it; it imports nothing of the package.

Broadcasts are explicit (broadcast_in_dim): Mosaic GPU lowers those, not size-1 reshapes. Rows
arrive as float32 via row(name), None when absent.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def bcast(x, shape, dim):
  return jax.lax.broadcast_in_dim(x, shape, (dim,))


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


def advance(h_ES, A_ES, x):
  """(exp(dt A), the next state)."""
  shape = A_ES.shape
  a_ES = jnp.exp(bcast(x["dt"], shape, 0) * A_ES)
  return a_ES, a_ES * h_ES + bcast(x["dt"] * x["u"], shape, 0) * bcast(x["B"], shape, 1)


def output(h_ES, x, D_E, gate=True):
  y_E = jnp.sum(h_ES * bcast(x["C"], h_ES.shape, 1), axis=1)
  if D_E is not None:
    y_E = y_E + D_E * x["u"]
  if gate and x["z"] is not None:
    y_E = y_E * x["z"] * sigmoid(x["z"])
  return y_E


def bwd_step(h_prev_ES, A_ES, x, D_E, g0_E, carry, use_softplus, valid=None):
  """One reverse step: carry (lam, gA, gD, gbias) -> (carry, rows gu, gdelta, gB, gC[, gz])."""
  lam_ES, gA_ES, gD_E, gbias_E = carry
  shape = A_ES.shape
  a_ES, h_ES = advance(h_prev_ES, A_ES, x)
  out = {}
  if x["z"] is not None:  # y = y0 * silu(z): split the cotangent between y0 and z.
    z_E, s_E = x["z"], sigmoid(x["z"])
    out["gz"] = g0_E * output(h_ES, x, D_E, gate=False) * s_E * (1.0 + z_E * (1.0 - s_E))
    g0_E = g0_E * z_E * s_E
  lam_ES = lam_ES + bcast(g0_E, shape, 0) * bcast(x["C"], shape, 1)
  out["gC"] = jnp.sum(bcast(g0_E, shape, 0) * h_ES, axis=0)
  out["gB"] = jnp.sum(lam_ES * bcast(x["dt"] * x["u"], shape, 0), axis=0)
  lamB_E = jnp.sum(lam_ES * bcast(x["B"], shape, 1), axis=1)
  q_ES = lam_ES * a_ES * h_prev_ES
  gA_ES = gA_ES + q_ES * bcast(x["dt"], shape, 0)
  gpre_E = jnp.sum(q_ES * A_ES, axis=1) + x["u"] * lamB_E
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
