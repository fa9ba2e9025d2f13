"""The statistics of the studies' rules: summaries over seeds, paired t-intervals, and the
bootstrap and null thresholds that decide whether a neuron is a hub or a specialist.

Part of a study's pre-registered rules with inn_jax/claims.py: a study records this file's
content hash when its first run starts (benchmarks/study.py), and the report withholds every
verdict when it has changed since. Change it only together with a new study.

  summary(values)           n, mean, sample sd (n - 1), min, max
  t_quantile(p, df)         Student's t quantile (regularized incomplete beta, bisection)
  paired(a, b)              per-seed differences a - b over the seeds both have: mean, sd and
                            the two-sided t-interval of their mean (None below two seeds)
  difference(d, min_effect) "greater" / "less" when the interval excludes 0 and |mean| exceeds
                            min_effect, else "tie" ("n/a" without an interval)
  neuron_roles(...)         in-degree ratios per neuron with bootstrap intervals over windows,
                            against two nulls: the same model at initialisation, and the trained
                            model with its neuron indices shuffled per token
"""

from __future__ import annotations

import math

import numpy as np


def summary(values) -> dict | None:
  """n, mean, sd (sample, n - 1; None for one value), min, max and the values; None if empty."""
  values = [float(v) for v in values if v is not None]
  if not values:
    return None
  n, mean = len(values), math.fsum(values) / len(values)
  sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
  return {"n": n, "mean": mean, "sd": sd, "min": min(values), "max": max(values),
          "values": values}


def _beta_cf(a: float, b: float, x: float) -> float:
  """Continued fraction of the incomplete beta function (modified Lentz)."""
  tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
  d = 1.0 / (d if abs(d) > tiny else tiny)
  h = d
  for m in range(1, 10_000):
    for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
      d = 1.0 + num * d
      d = 1.0 / (d if abs(d) > tiny else tiny)
      c = 1.0 + num / c
      c = c if abs(c) > tiny else tiny
      h *= d * c
    if abs(d * c - 1.0) < 1e-15:
      break
  return h


def betainc(a: float, b: float, x: float) -> float:
  """The regularized incomplete beta function I_x(a, b)."""
  if not 0.0 <= x <= 1.0:
    raise ValueError(f"betainc: x={x} must be in [0, 1].")
  if x in (0.0, 1.0):
    return x
  front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                   + a * math.log(x) + b * math.log1p(-x))
  if x < (a + 1.0) / (a + b + 2.0):
    return front * _beta_cf(a, b, x) / a
  return 1.0 - front * _beta_cf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
  """P(T <= t) for Student's t with df degrees of freedom."""
  tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
  return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
  """The t with P(T <= t) = p, by bisection (to 1e-12 of the t scale)."""
  if not 0.0 < p < 1.0 or df <= 0:
    raise ValueError(f"t_quantile: p={p} must be in (0, 1) and df={df} > 0.")
  if p < 0.5:
    return -t_quantile(1.0 - p, df)
  lo, hi = 0.0, 1.0
  while t_cdf(hi, df) < p:
    hi *= 2.0
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    if t_cdf(mid, df) < p:
      lo = mid
    else:
      hi = mid
    if hi - lo < 1e-12:
      break
  return 0.5 * (lo + hi)


def t_interval(values, level: float = 0.95) -> dict | None:
  """summary(values) with the two-sided t-interval of the mean ("lo", "hi"; None below n = 2)."""
  s = summary(values)
  if s is None:
    return None
  if s["n"] < 2:
    return {**s, "lo": None, "hi": None, "level": level}
  half = t_quantile(0.5 + level / 2.0, s["n"] - 1) * s["sd"] / math.sqrt(s["n"])
  return {**s, "lo": s["mean"] - half, "hi": s["mean"] + half, "level": level}


def paired(a: dict, b: dict, level: float = 0.95) -> dict | None:
  """The differences a[seed] - b[seed] over the seeds both have (values None are left out):
  t_interval of them, with "seeds". None when no seed is shared."""
  seeds = sorted(s for s in a if s in b and a[s] is not None and b[s] is not None)
  if not seeds:
    return None
  return {**t_interval([a[s] - b[s] for s in seeds], level), "seeds": seeds}


def difference(d: dict | None, min_effect: float) -> str:
  """"greater" (a > b) or "less" when d's interval excludes 0 and |mean| > min_effect; "tie"
  otherwise; "n/a" when there is no interval (fewer than two paired seeds)."""
  if d is None or d["lo"] is None:
    return "n/a"
  if d["lo"] > 0 and d["mean"] > min_effect:
    return "greater"
  if d["hi"] < 0 and d["mean"] < -min_effect:
    return "less"
  return "tie"


def _quantile(x, q: float) -> float:
  return float(np.quantile(np.asarray(x, np.float64), q))


def neuron_roles(indegree_TN, indegree_init_TN, window: int, *, hub: float = 1.5,
                 specialist: float = 0.6, quantile: float = 0.95, level: float = 0.95,
                 bootstrap: int = 1000, shuffles: int = 200, seed: int = 0) -> dict:
  """Hubs and specialists of one layer, each beyond two nulls.

  indegree_TN: the attention each neuron receives at each of T positions (the head-averaged
  weights summed over receivers; every row sums to N, so the mean ratio is exactly 1), T a
  multiple of `window`, positions grouped in windows of that many; indegree_init_TN: the same
  positions through the model at initialisation.

  ratio[m] = mean over positions of indegree[:, m] (in units of the mean in-degree). Its
  interval: percentiles (1 - level) / 2 and (1 + level) / 2 of `bootstrap` resamplings of
  the windows. Nulls: (shuffled) the trained model with each position's in-degrees permuted
  over neurons, `shuffles` times; (init) the bootstrap of the model at initialisation. The hub
  threshold is the larger of the nulls' `quantile` quantiles of the largest ratio; the
  specialist threshold the smaller of their (1 - quantile) quantiles of the smallest ratio. A
  hub has ratio >= hub and its interval's lower end above the hub threshold; a specialist has
  ratio <= specialist and its interval's upper end below the specialist threshold.
  """
  d_TN = np.asarray(indegree_TN, np.float64)
  d0_TN = np.asarray(indegree_init_TN, np.float64)
  if d_TN.ndim != 2 or d_TN.shape != d0_TN.shape or d_TN.shape[0] % window:
    raise ValueError(f"neuron_roles: in-degrees {d_TN.shape} and {d0_TN.shape} must be equal "
                     f"(T, N) arrays with T a multiple of window={window}.")
  rng = np.random.default_rng(seed)
  n_windows, n = d_TN.shape[0] // window, d_TN.shape[1]

  def boot(x_TN):
    w_WN = x_TN.reshape(n_windows, window, n).mean(1)
    idx = rng.integers(n_windows, size=(bootstrap, n_windows))
    return w_WN[idx].mean(1)  # (bootstrap, N)

  ratio_N = d_TN.mean(0)
  boot_BN = boot(d_TN)
  lo_N = np.quantile(boot_BN, (1 - level) / 2, axis=0)
  hi_N = np.quantile(boot_BN, (1 + level) / 2, axis=0)
  shuffled_max, shuffled_min = [], []
  for _ in range(shuffles):
    r_N = rng.permuted(d_TN, axis=1).mean(0)
    shuffled_max.append(r_N.max())
    shuffled_min.append(r_N.min())
  init_BN = boot(d0_TN)
  null = {"shuffled_max_q": _quantile(shuffled_max, quantile),
          "shuffled_min_q": _quantile(shuffled_min, 1 - quantile),
          "init_max_q": _quantile(init_BN.max(1), quantile),
          "init_min_q": _quantile(init_BN.min(1), 1 - quantile),
          "init_ratio": d0_TN.mean(0).tolist()}
  hub_at = max(null["shuffled_max_q"], null["init_max_q"])
  spec_at = min(null["shuffled_min_q"], null["init_min_q"])
  return {
      "ratio": ratio_N.tolist(), "lo": lo_N.tolist(), "hi": hi_N.tolist(),
      "hub_threshold": hub_at, "specialist_threshold": spec_at, "null": null,
      "hubs": [m for m in range(n) if ratio_N[m] >= hub and lo_N[m] > hub_at],
      "specialists": [m for m in range(n) if ratio_N[m] <= specialist and hi_N[m] < spec_at],
      "params": {"hub": hub, "specialist": specialist, "quantile": quantile, "level": level,
                 "bootstrap": bootstrap, "shuffles": shuffles, "seed": seed, "window": window,
                 "positions": int(d_TN.shape[0])},
  }
