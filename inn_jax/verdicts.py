"""Verdicts for new studies: a declared family of paired comparisons, each judged "different",
"equivalent" or "inconclusive", with Holm's correction across the family.

For studies registered from now on. Registered studies keep the rules they recorded
(inn_jax/claims.py and inn_jax/stats.py, whose content hashes they hold): this module only
imports from stats.py, so those hashes are untouched.

  holm(p_values, alpha)        Holm's step-down correction: adjusted p-values (monotone in p,
                               at most 1) and which hypotheses it rejects
  paired_test(d, margin, ...)  per-seed differences d_i = a_i - b_i: mean, sd, se, the
                               two-sided t-test against 0 with its (1 - alpha) interval, and
                               the two one-sided tests (TOST) of equivalence within +-margin
                               with their (1 - 2 alpha) interval
  family(comparisons, margin)  paired_test of each comparison, Holm across the family (once for
                               the difference p-values, once for the TOST p-values), a verdict
  line(comparison)             one line of a report for a comparison
  ngram_order(rows)            the n-gram reference's order: the lowest valid BPC

Verdicts. "equivalent" when the Holm-adjusted TOST p < alpha (the difference lies within the
margin); else "different" when the Holm-adjusted t-test p < alpha and |mean| > min_effect;
else "inconclusive": the data show neither. An equivalence margin must be declared in the
study's plan before the runs (nothing here defaults one): a margin chosen after seeing the
results could make any comparison "equivalent". Decisions are strict (p < alpha), as an interval
that must exclude 0 (or lie inside the open (-margin, margin)) is.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from inn_jax import stats

VERDICTS = ("different", "equivalent", "inconclusive")


def _alpha(alpha: float, where: str) -> float:
  # Below 1/2: the TOST interval (1 - 2 alpha) must be an interval.
  if not 0.0 < alpha < 0.5:
    raise ValueError(f"{where}: alpha={alpha} must be in (0, 0.5).")
  return float(alpha)


# ------------------------------------------------------------------------------------- Holm

@dataclasses.dataclass(frozen=True)
class Holm:
  """Holm's correction of a family of p-values. `adjusted` and `rejected` have the input's
  form: a dict with its keys in its order for a mapping, a tuple in its order for a sequence."""
  adjusted: dict | tuple
  rejected: dict | tuple
  alpha: float


def holm(p_values: Mapping[str, float] | Sequence[float], alpha: float = 0.05) -> Holm:
  """Holm-Bonferroni step-down correction (Holm 1979) of m p-values.

  With the p-values sorted, p_(1) <= ... <= p_(m), the adjusted p-value of the k-th is
  max over j <= k of (m - j + 1) p_(j), capped at 1: monotone in p, and a hypothesis is rejected
  at alpha exactly when its adjusted p-value is < alpha (every smaller p_(j) also passed its
  threshold alpha / (m - j + 1)). Holds the family-wise error rate at alpha under any
  dependence between the tests. Tied p-values get equal adjusted values.
  """
  alpha = _alpha(alpha, "holm")
  keys = list(p_values) if isinstance(p_values, Mapping) else None
  given = [p_values[k] for k in keys] if keys is not None else list(p_values)
  ps = []
  for i, p in enumerate(given):
    try:
      ps.append(float(p))
    except (TypeError, ValueError):
      ps.append(math.nan)
    if not 0.0 <= ps[-1] <= 1.0:  # NaN fails this too.
      raise ValueError(f"holm: p-value {keys[i] if keys is not None else i!r}={p!r} must be a "
                       f"number in [0, 1].")
  m = len(ps)
  adjusted = [0.0] * m
  running = 0.0
  # sorted() is stable: tied p-values keep their input order, and the running maximum gives
  # them the same adjusted value.
  for rank, i in enumerate(sorted(range(m), key=ps.__getitem__)):
    running = max(running, min(1.0, (m - rank) * ps[i]))
    adjusted[i] = running
  rejected = [a < alpha for a in adjusted]
  if keys is not None:
    return Holm(dict(zip(keys, adjusted)), dict(zip(keys, rejected)), alpha)
  return Holm(tuple(adjusted), tuple(rejected), alpha)


# ------------------------------------------------------------------------ one paired test

@dataclasses.dataclass(frozen=True)
class PairedTest:
  """The tests of one comparison's per-seed differences d_i = a_i - b_i.

  n, mean, sd (sample, n - 1), se = sd / sqrt(n), df = n - 1, t = mean / se.
  p: two-sided P(|T_df| >= |t|), the t-test of mean 0; interval: mean +- t_{1-alpha/2} se.
  TOST against (-margin, margin): p_lower = P(T_df >= (mean + margin) / se) (tests
  mean <= -margin), p_upper = P(T_df <= (mean - margin) / se) (tests mean >= margin),
  p_tost = max of the two; tost_interval: mean +- t_{1-alpha} se, the (1 - 2 alpha) interval,
  inside (-margin, margin) exactly when p_tost < alpha.
  When every difference is equal (se = 0) the statistics take their limits: the mean is known
  exactly, p = 0 unless it is 0 (then 1), p_lower = 0 when mean > -margin (else 1),
  p_upper = 0 when mean < margin (else 1), and both intervals are [mean, mean].
  """
  name: str
  n: int
  mean: float
  sd: float
  se: float
  df: int
  t: float
  p: float
  interval: tuple[float, float]
  margin: float
  p_lower: float
  p_upper: float
  p_tost: float
  tost_interval: tuple[float, float]
  alpha: float


def _margin(margin, name: str) -> float:
  if margin is None:
    raise ValueError(f"{name}: no equivalence margin declared. The study's plan must declare "
                     f"one (a number > 0, in the differences' units) before its runs; a margin "
                     f"chosen after the results are seen proves nothing.")
  try:
    value = float(margin)
  except (TypeError, ValueError):
    value = math.nan
  if not (math.isfinite(value) and value > 0):
    raise ValueError(f"{name}: equivalence margin {margin!r} must be a finite number > 0, "
                     f"declared in the study's plan.")
  return value


def paired_test(differences: Sequence[float], margin: float, alpha: float = 0.05,
                name: str = "differences") -> PairedTest:
  """The t-test and TOST of per-seed differences (see PairedTest). `name` names the comparison
  in errors: fewer than two differences, a missing value, a non-finite one, or no margin."""
  alpha = _alpha(alpha, name)
  margin = _margin(margin, name)
  given, d = list(differences), []
  for v in given:
    try:
      d.append(float(v))
    except (TypeError, ValueError):
      d.append(math.nan)
  if len(d) < 2:
    raise ValueError(f"{name}: {len(d)} paired difference(s); a t-test needs at least two seeds "
                     f"run by both sides.")
  if not all(math.isfinite(v) for v in d):
    # A diverged run or a missing seed: the caller decides what it means (it is not a
    # difference of 0, and dropping it silently would change n).
    raise ValueError(f"{name}: differences {given!r} must all be finite numbers; "
                     f"pair only the seeds both sides finished.")
  n, df = len(d), len(d) - 1
  if max(d) == min(d):
    # Tested directly: fsum's mean of equal values can be off by an ulp, which would make a
    # tiny se and an arbitrary t where the limit is clear.
    mean = d[0]
    t = 0.0 if mean == 0 else math.copysign(math.inf, mean)
    return PairedTest(name, n, mean, 0.0, 0.0, df, t, 1.0 if mean == 0 else 0.0, (mean, mean),
                      margin, 0.0 if mean > -margin else 1.0, 0.0 if mean < margin else 1.0,
                      0.0 if -margin < mean < margin else 1.0, (mean, mean), alpha)
  s = stats.summary(d)
  mean, sd = s["mean"], s["sd"]
  se = sd / math.sqrt(n)
  t = mean / se
  p = min(1.0, 2.0 * stats.t_cdf(-abs(t), df))  # The tail itself: no 1 - (1 - tail) loss.
  half = stats.t_quantile(1.0 - alpha / 2.0, df) * se
  p_lower = stats.t_cdf(-(mean + margin) / se, df)  # P(T >= x) = P(T <= -x).
  p_upper = stats.t_cdf((mean - margin) / se, df)
  tost_half = stats.t_quantile(1.0 - alpha, df) * se
  return PairedTest(name, n, mean, sd, se, df, t, p, (mean - half, mean + half), margin,
                    p_lower, p_upper, max(p_lower, p_upper),
                    (mean - tost_half, mean + tost_half), alpha)


# ------------------------------------------------------------------------------- a family

@dataclasses.dataclass(frozen=True)
class Comparison(PairedTest):
  """A PairedTest within its family: p_holm and p_tost_holm are Holm-adjusted over the family's
  family_size comparisons; verdict is one of VERDICTS (see the module's docstring);
  within_margin_difference is True when the verdict is "equivalent" but a difference was shown
  too (Holm-adjusted p < alpha and |mean| > min_effect): real, and smaller than the margin."""
  p_holm: float
  p_tost_holm: float
  min_effect: float
  family_size: int
  verdict: str
  within_margin_difference: bool


def family(comparisons: Mapping[str, Sequence[float]], margin: float | Mapping[str, float],
           min_effect: float = 0.0, alpha: float = 0.05) -> dict[str, Comparison]:
  """The verdicts of a declared family of comparisons: {name: Comparison}, in its order.

  comparisons: name -> per-seed differences a_i - b_i (at least two each). margin: one margin
  for all, or name -> margin with one for every comparison, as the study's plan declares them.
  The family is the plan's whole declared set: Holm's correction counts every comparison, so a
  margin naming a comparison that is not given is refused rather than the family shrunk.
  """
  alpha = _alpha(alpha, "family")
  if not comparisons:
    raise ValueError("family: no comparisons; the study's plan declares the family.")
  if isinstance(margin, Mapping):
    extra = [k for k in margin if k not in comparisons]
    if extra:
      raise ValueError(f"family: margins declared for {extra} but no differences given for "
                       f"them; the family is the plan's declared set (Holm counts each one).")
    margins = {name: margin.get(name) for name in comparisons}
  else:
    margins = {name: margin for name in comparisons}
  min_effect = float(min_effect)
  if not (math.isfinite(min_effect) and min_effect >= 0):
    raise ValueError(f"family: min_effect={min_effect} must be a finite number >= 0.")
  tests = {name: paired_test(d, margins[name], alpha, name) for name, d in comparisons.items()}
  diff = holm({k: t.p for k, t in tests.items()}, alpha)
  tost = holm({k: t.p_tost for k, t in tests.items()}, alpha)
  out = {}
  for name, t in tests.items():
    shown = diff.rejected[name] and abs(t.mean) > min_effect
    verdict = ("equivalent" if tost.rejected[name] else "different" if shown else "inconclusive")
    out[name] = Comparison(**{f.name: getattr(t, f.name) for f in dataclasses.fields(t)},
                           p_holm=diff.adjusted[name], p_tost_holm=tost.adjusted[name],
                           min_effect=min_effect, family_size=len(tests), verdict=verdict,
                           within_margin_difference=verdict == "equivalent" and shown)
  return out


def _p(p: float, eq: str = "=") -> str:
  return "<0.001" if p < 0.001 else f"{eq}{p:.3f}"


def line(c: Comparison, label: str | None = None, digits: int = 3) -> str:
  """One report line, e.g. "workspace - attention at N=64: -0.004 [-0.012, +0.004], margin
  0.02: equivalent (TOST p=0.003, Holm 0.009)". The interval is the (1 - alpha) one; the
  p-values are those the verdict rests on (both for "inconclusive" and for an equivalence
  with a difference within the margin)."""
  def f(v):
    return f"{v:+.{digits}f}"

  head = (f"{label if label is not None else c.name}: {f(c.mean)} "
          f"[{f(c.interval[0])}, {f(c.interval[1])}], margin {c.margin:g}: ")
  tost = f"TOST p{_p(c.p_tost)}, Holm {_p(c.p_tost_holm, '')}"
  diff = f"p{_p(c.p)}, Holm {_p(c.p_holm, '')}"
  if c.verdict == "equivalent":
    if c.within_margin_difference:
      return head + f"equivalent, a difference within the margin ({tost}; {diff})"
    return head + f"equivalent ({tost})"
  if c.verdict == "different":
    return head + f"different ({diff})"
  return head + f"inconclusive ({diff}; {tost})"


# --------------------------------------------------------------------- n-gram reference

def ngram_order(rows: Mapping[int, Mapping[str, float]], select: str = "valid_bpc"):
  """The n-gram reference's order: the key of `rows` ({order: {"valid_bpc", "test_bpc", ...}},
  as inn_jax.studies.ngram reads them) whose row has the lowest `select` value, ties to the
  smaller order. The caller then reads the test value from that row.

  The order is chosen on valid, never on test: choosing on test would pick the reference that
  happens to do best on the very numbers it is compared with. A `select` naming the test split
  is refused, as is a row that lacks `select` or has no finite value there.
  """
  if select.startswith("test"):
    raise ValueError(f"ngram_order: select={select!r}; the order is chosen on valid, never on "
                     f"test.")
  if not rows:
    raise ValueError("ngram_order: no orders; run the n-gram reference first.")
  best = None
  for order, row in rows.items():
    value = (row or {}).get(select)
    if value is None or not math.isfinite(float(value)):
      raise ValueError(f"ngram_order: order {order} has no finite {select!r} "
                       f"(row keys {sorted(row or {})}).")
    if best is None or (float(value), int(order)) < best[:2]:
      best = (float(value), int(order), order)
  return best[2]
