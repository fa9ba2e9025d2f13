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


# ------------------------------------------------------------------------------ the workspace
# Convention: w[s, n] is the weight slot s gives neuron n when it is written (each slot's row
# sums to 1 over the neurons); r[n, s] the weight neuron n gives slot s when it reads (each
# row sums to 1 over the slots). A neuron's write share is (N / m) sum_s w[s, n]: the mean over
# neurons is exactly 1, as for the attention's in-degree, so the same hub and specialist
# factors apply. A slot's reader share is (m / N) sum_n r[n, s] (mean 1 over the slots).
# Writer of slot s: w[s, n] > edge_factor / N; reader: r[n, s] > edge_factor / m.

def workspace_summary(write_LHmN, read_LHNm, *, hub: float = HUB,
                      specialist: float = SPECIALIST, edge_factor: float = EDGE_FACTOR,
                      top: int = 3) -> dict:
  """Who writes to which slot and who reads it, per layer, from the mean write (L, H, m, N)
  and read (L, H, N, m) weights over a split (heads averaged for the roles)."""
  write_LHmN = np.asarray(write_LHmN, np.float64)
  read_LHNm = np.asarray(read_LHNm, np.float64)
  if write_LHmN.ndim != 4 or read_LHNm.shape != write_LHmN.shape[:2] + write_LHmN.shape[:1:-1]:
    raise ValueError(f"workspace weights must be (L, H, m, N) and (L, H, N, m), got "
                     f"{write_LHmN.shape} and {read_LHNm.shape}.")
  m, n = write_LHmN.shape[-2:]
  tol = 1 + _REL_TOL
  layers = []
  for i, (w_HmN, r_HNm) in enumerate(zip(write_LHmN, read_LHNm)):
    w_mN, r_Nm = w_HmN.mean(0), r_HNm.mean(0)
    share_N = w_mN.sum(0) * n / m
    readers_m = r_Nm.sum(0) * m / n
    layers.append({
        "layer": i, "write_share": share_N.tolist(),
        "hubs": np.flatnonzero(share_N >= hub).tolist(),
        "specialists": np.flatnonzero(share_N <= specialist).tolist(),
        "writers_per_slot": (w_mN > edge_factor / n * tol).sum(1).tolist(),
        "top_writers_per_slot": np.argsort(-w_mN, axis=1)[:, :top].tolist(),
        "reader_share": readers_m.tolist(),
        "readers_per_slot": (r_Nm > edge_factor / m * tol).sum(0).tolist(),
        "max_write_deviation_from_uniform": float(np.abs(w_HmN - 1.0 / n).max()),
        "max_read_deviation_from_uniform": float(np.abs(r_HNm - 1.0 / m).max())})
  return {"convention": "w[s, n]: weight slot s gives neuron n when written; r[n, s]: weight "
                        "neuron n gives slot s when it reads; write share = (N / m) sum_s w[s, n] "
                        "(mean 1)",
          "hub_factor": hub, "specialist_factor": specialist, "n_neurons": n, "slots": m,
          "edge_threshold": f"w[s, n] > {edge_factor} / N, r[n, s] > {edge_factor} / m",
          "layers": layers, "mean_write_LHmN": write_LHmN.tolist(),
          "mean_read_LHNm": read_LHNm.tolist()}


def blocks(a, axis: int, n_blocks: int = 64) -> np.ndarray:
  """Means over n_blocks runs of consecutive neurons along `axis` (N a multiple of n_blocks or
  at most n_blocks: then unchanged): how the analyses draw populations too large to show
  neuron by neuron."""
  a = np.asarray(a, np.float64)
  size = a.shape[axis]
  if size <= n_blocks:
    return a
  if size % n_blocks:
    raise ValueError(f"blocks: {size} neurons do not split into {n_blocks} equal blocks.")
  a = np.moveaxis(a, axis, -1)
  a = a.reshape(*a.shape[:-1], n_blocks, size // n_blocks).mean(-1)
  return np.moveaxis(a, -1, axis)
