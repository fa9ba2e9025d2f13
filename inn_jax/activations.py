"""What the neurons do: activation statistics (Appendix A.2), population coding (Figure 4) and
how different the N neurons' states are (neuron diversity).

A neuron's activation at a token is one number reduced from its D-wide state h (the INN sows h
after every layer): reduce="mean" (default) is the mean over features, the signed scalar a
per-neuron plot shows; reduce="rms" is sqrt(mean(h^2)), its magnitude. Sparsity is the share of
neuron-token pairs with |a| < 0.1.

Diversity of a layer, over all positions: sum_n |h_n - mean_n h|^2 / sum_n |h_n|^2, the share of
the states' second moment that differs between neurons, in [0, 1]. It is computed from
differences to neuron 0, so neurons that are exact copies (the paper-faithful model in eval mode)
give exactly 0, not rounding noise.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

SPARSE_BELOW = 0.1
REDUCTIONS = ("mean", "rms")


def neuron_activation(h_BNLD, reduce: str = "mean"):
  """One activation per neuron and token: a_BNL."""
  if reduce not in REDUCTIONS:
    raise ValueError(f"reduce={reduce!r} is not one of {REDUCTIONS}.")
  h = h_BNLD.astype(jnp.float32)
  return h.mean(-1) if reduce == "mean" else jnp.sqrt(jnp.square(h).mean(-1))


def moments(a_BNL, weight_B=None) -> dict:
  """Per-neuron count, mean, centred sum of squares and near-zero count of one batch; rows with
  weight 0 (padding) are left out. Merge batches with `merge_moments`."""
  a = a_BNL.astype(jnp.float32)
  w_B11 = (jnp.ones(a.shape[0]) if weight_B is None else weight_B.astype(jnp.float32))[:, None,
                                                                                       None]
  count = w_B11.sum() * a.shape[2]
  mean_N = (w_B11 * a).sum((0, 2)) / count
  return {"count": count,
          "mean_N": mean_N,
          "m2_N": (w_B11 * jnp.square(a - mean_N[:, None])).sum((0, 2)),
          "near_zero_N": (w_B11 * (jnp.abs(a) < SPARSE_BELOW)).sum((0, 2))}


def merge_moments(acc: dict | None, new: dict) -> dict:
  """Chan et al.'s parallel update, in float64 on the host."""
  new = {k: np.asarray(v, np.float64) for k, v in new.items()}
  if acc is None:
    return new
  n = acc["count"] + new["count"]
  delta_N = new["mean_N"] - acc["mean_N"]
  return {"count": n,
          "mean_N": acc["mean_N"] + delta_N * new["count"] / n,
          "m2_N": acc["m2_N"] + new["m2_N"] + delta_N ** 2 * acc["count"] * new["count"] / n,
          "near_zero_N": acc["near_zero_N"] + new["near_zero_N"]}


def activation_stats(m: dict) -> dict:
  """Mean, variance and sparsity per neuron, and the sparsity of all neuron-token pairs."""
  var_N = m["m2_N"] / m["count"]
  sparsity_N = m["near_zero_N"] / m["count"]
  return {"mean": m["mean_N"].tolist(), "variance": var_N.tolist(),
          "sparsity": sparsity_N.tolist(), "sparsity_all": float(sparsity_N.mean()),
          "highest_mean_neuron": int(np.argmax(m["mean_N"])),
          "lowest_mean_neuron": int(np.argmin(m["mean_N"])),
          # "Selective" in A.2's sense: variance well above the layer's typical neuron.
          "high_variance_neurons": np.flatnonzero(var_N >= 1.5 * var_N.mean()).tolist()}


def diversity_sums(h_BNLD, weight_B=None):
  """(between-neuron, total) sums of squares of one batch; diversity = between / total."""
  h = h_BNLD.astype(jnp.float32)
  w_B = jnp.ones(h.shape[0]) if weight_B is None else weight_B.astype(jnp.float32)
  d = h - h[:, :1]  # Exactly zero where neurons are copies; the spread is shift-invariant.
  between_B = jnp.square(d - d.mean(1, keepdims=True)).sum((1, 2, 3))
  total_B = jnp.square(h).sum((1, 2, 3))
  return (w_B * between_B).sum(), (w_B * total_B).sum()


def diversity(between: float, total: float) -> float:
  return float(between / total) if total > 0 else 0.0


def population_code(a_BNL, length: int):
  """Figure 4: activations of every neuron across the first `length` tokens of row 0, a_NL."""
  return a_BNL[0, :, :length]
