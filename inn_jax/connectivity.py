"""The learned inter-neuron attention graph (the paper's Figure 3 and Appendix A.3).

Convention: a[n, m] is the weight receiver (query) neuron n gives sender (key) neuron m; each row
sums to 1. Neuron m's in-degree is its column sum, the attention it receives (self-attention
included); the mean in-degree is therefore exactly 1, and a heatmap with senders on the x axis
shows a hub as a vertical band.

  hub:         in-degree >= 1.5 x the mean     specialist:  in-degree <= 0.6 x the mean
  edge n <- m: a[n, m] > edge_factor / N (more than the uniform share; default factor 1);
               average degree = edges / N.

Exactly uniform attention (the paper-faithful model) thus has no hubs, no specialists and no edges.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

HUB = 1.5
SPECIALIST = 0.6
EDGE_FACTOR = 1.0
# Float rounding of exactly uniform weights (1/N not representable for most N) must not make edges.
_REL_TOL = 1e-6


def attention_sum(w_THNN, weight_T=None):
  """Sum over positions (optionally weighted, e.g. by a 0/1 mask) of attention maps: (H, N, N)."""
  if weight_T is None:
    return w_THNN.astype(jnp.float32).sum(0)
  return jnp.einsum("t,thnm->hnm", weight_T.astype(jnp.float32), w_THNN.astype(jnp.float32))


def _check(a_NN):
  a_NN = np.asarray(a_NN, np.float64)
  if a_NN.ndim != 2 or a_NN.shape[0] != a_NN.shape[1]:
    raise ValueError(f"an attention graph must be a square (N, N) matrix, got {a_NN.shape}.")
  return a_NN


def in_degree(a_NN) -> np.ndarray:
  """Attention each neuron receives: column sums, shape (N,)."""
  return _check(a_NN).sum(0)


def roles(a_NN, hub: float = HUB, specialist: float = SPECIALIST) -> dict:
  """In-degrees, and the neurons at or above `hub` x / at or below `specialist` x their mean."""
  deg_N = in_degree(a_NN)
  mean = deg_N.mean()
  return {"in_degree": deg_N.tolist(),
          "hubs": np.flatnonzero(deg_N >= hub * mean).tolist(),
          "specialists": np.flatnonzero(deg_N <= specialist * mean).tolist()}


def average_degree(a_NN, edge_factor: float = EDGE_FACTOR) -> float:
  """Edges per neuron, an edge being a weight above edge_factor / N."""
  a_NN = _check(a_NN)
  n = a_NN.shape[0]
  return float((a_NN > edge_factor / n * (1 + _REL_TOL)).sum() / n)


def max_deviation_from_uniform(a_NN) -> float:
  """max |a - 1/N| over any stack of (N, N) graphs; 0 for the paper-faithful model."""
  a_NN = np.asarray(a_NN, np.float64)
  return float(np.abs(a_NN - 1.0 / a_NN.shape[-1]).max())


def summarize(mean_LHNN, *, hub: float = HUB, specialist: float = SPECIALIST,
              edge_factor: float = EDGE_FACTOR) -> dict:
  """Figure 3 / A.3 from mean attention per layer and head (averaged over a split).

  Roles and degrees come from each layer's head-averaged graph, and "overall" from the mean over
  layers and heads.
  """
  mean_LHNN = np.asarray(mean_LHNN, np.float64)
  if mean_LHNN.ndim != 4:
    raise ValueError(f"mean attention must be (layers, heads, N, N), got {mean_LHNN.shape}.")
  n = mean_LHNN.shape[-1]
  layers = []
  for i, a_HNN in enumerate(mean_LHNN):
    a_NN = a_HNN.mean(0)
    layers.append({
        "layer": i, **roles(a_NN, hub, specialist),
        "average_degree": average_degree(a_NN, edge_factor),
        "average_degree_per_head": [average_degree(a, edge_factor) for a in a_HNN],
        "max_deviation_from_uniform": max_deviation_from_uniform(a_HNN),
    })
  overall = mean_LHNN.mean((0, 1))
  return {
      "convention": "a[n, m]: weight receiver n gives sender m; in-degree = column sum",
      "hub_factor": hub, "specialist_factor": specialist,
      "edge_threshold": f"a[n, m] > {edge_factor} / N = {edge_factor / n:.6g}",
      "n_neurons": n,
      "max_deviation_from_uniform": max_deviation_from_uniform(mean_LHNN),
      "uniform": max_deviation_from_uniform(mean_LHNN) <= _REL_TOL / n,
      "overall": {**roles(overall, hub, specialist),
                  "average_degree": average_degree(overall, edge_factor)},
      "layers": layers,
      "mean_attention_LHNN": mean_LHNN.tolist(),
  }
