"""inn_jax.verdicts against worked examples (by hand, Holm 1979's procedure, Student's sleep
data) and against independent computations (scipy where installed, a step-down loop)."""

import math

import numpy as np
import pytest

from inn_jax import verdicts

# ------------------------------------------------------------------------------------- Holm


def test_holm_worked_example():
  # p = [0.01, 0.04, 0.03, 0.005], m = 4. Sorted: 0.005 (#3), 0.01 (#0), 0.03 (#2), 0.04 (#1).
  # Times m - j + 1 = 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04; running maximum: 0.02, 0.03, 0.06,
  # 0.06. Step-down at 0.05: 0.005 < 0.05/4 = 0.0125 reject; 0.01 < 0.05/3 = 0.0167 reject;
  # 0.03 < 0.05/2 = 0.025 fails: stop, so #2 and #1 stand.
  h = verdicts.holm([0.01, 0.04, 0.03, 0.005])
  assert h.adjusted == pytest.approx((0.03, 0.06, 0.06, 0.02))
  assert h.rejected == (True, False, False, True)
  # A mapping keeps its keys in its order; the same numbers.
  h = verdicts.holm({"d": 0.01, "a": 0.04, "c": 0.03, "b": 0.005})
  assert list(h.adjusted) == ["d", "a", "c", "b"] and list(h.rejected) == ["d", "a", "c", "b"]
  assert h.adjusted["a"] == pytest.approx(0.06) and h.adjusted["b"] == pytest.approx(0.02)
  assert h.rejected == {"d": True, "a": False, "c": False, "b": True}
  # Capped at 1; one test is its own adjustment; ties share the larger adjustment.
  assert verdicts.holm([0.5, 0.6]).adjusted == (1.0, 1.0)
  assert verdicts.holm([0.04]).adjusted == (0.04,) and verdicts.holm([0.04]).rejected == (True,)
  assert verdicts.holm([0.02, 0.02]).adjusted == pytest.approx((0.04, 0.04))
  assert verdicts.holm([]).adjusted == ()
  for bad in ([0.1, 1.5], [math.nan], [None]):
    with pytest.raises(ValueError, match="holm"):
      verdicts.holm(bad)


def _holm_step_down(ps, alpha):
  """Holm's procedure as written: sort, reject while p_(k) < alpha / (m - k), stop at the
  first that fails."""
  order = sorted(range(len(ps)), key=lambda i: ps[i])
  rejected = [False] * len(ps)
  for k, i in enumerate(order):
    if not ps[i] < alpha / (len(ps) - k):
      break
    rejected[i] = True
  return rejected


def _holm_adjusted(ps):
  """adj_i = min(1, max over p_j <= p_i of (m - #{p_k < p_j}) p_j): no sorting, no loop state."""
  m = len(ps)
  return [min(1.0, max((m - sum(q < pj for q in ps)) * pj for pj in ps if pj <= pi))
          for pi in ps]


def test_holm_against_a_step_down_loop():
  rng = np.random.default_rng(0)
  for case in range(300):
    m = int(rng.integers(1, 12))
    # Mostly small p-values, so the boundary is crossed; some drawn twice (ties).
    pool = np.concatenate([rng.uniform(0, 0.06, m), rng.uniform(0, 1, m)])
    ps = [float(p) for p in rng.choice(pool, m)]
    alpha = float(rng.choice([0.01, 0.05, 0.1]))
    h = verdicts.holm(ps, alpha)
    assert list(h.rejected) == _holm_step_down(ps, alpha), (case, ps)
    assert h.adjusted == pytest.approx(_holm_adjusted(ps), rel=1e-12)
    for i in range(m):
      assert ps[i] <= h.adjusted[i] <= 1.0
      for j in range(m):
        if ps[i] <= ps[j]:
          assert h.adjusted[i] <= h.adjusted[j]  # Monotone in p.


# ------------------------------------------------------------------------ one paired test

# Student's sleep data (Cushny & Peebles; Student 1908): extra hours of sleep under drug 2
# minus drug 1 for 10 patients. R's t.test(extra ~ group, sleep, paired = TRUE) gives
# t = -4.0621, df = 9, p-value = 0.002833, 95% CI -2.4598858 -0.7001142 (drug 1 - drug 2).
SLEEP = [1.2, 2.4, 1.3, 1.3, 0.0, 1.0, 1.8, 0.8, 4.6, 1.4]


def test_paired_test_on_students_sleep_data():
  r = verdicts.paired_test(SLEEP, margin=2.5)
  assert (r.n, r.df) == (10, 9) and r.mean == pytest.approx(1.58)
  assert r.t == pytest.approx(4.0621, abs=1e-4) and r.p == pytest.approx(0.002833, abs=1e-6)
  assert r.interval == pytest.approx((0.7001142, 2.4598858), abs=1e-6)
  # The 90% interval by the table's t_{0.95, 9} = 1.8331: 1.58 -+ 1.8331 * 1.229995 / sqrt(10).
  half = 1.8331 * 1.229995 / math.sqrt(10)
  assert r.tost_interval == pytest.approx((1.58 - half, 1.58 + half), abs=1e-4)
  # (0.867, 2.293) lies inside (-2.5, 2.5): equivalent at 0.05; not inside (-2.2, 2.2).
  assert r.p_tost < 0.05 and r.p_tost == r.p_upper
  assert verdicts.paired_test(SLEEP, margin=2.2).p_tost > 0.05


def test_paired_test_with_one_degree_of_freedom_by_hand():
  # d = [0, 2]: mean 1, sd sqrt(2), se 1, t = 1, df 1: Cauchy, P(T <= x) = 1/2 + atan(x)/pi.
  r = verdicts.paired_test([0.0, 2.0], margin=3.0)
  assert (r.mean, r.se, r.t) == pytest.approx((1.0, 1.0, 1.0))
  assert r.p == pytest.approx(0.5)  # 2 (1/2 - atan(1)/pi).
  assert r.p_lower == pytest.approx(0.5 - math.atan(4.0) / math.pi)  # P(T >= (1 + 3)/1).
  assert r.p_upper == pytest.approx(0.5 - math.atan(2.0) / math.pi)  # P(T <= (1 - 3)/1).
  assert r.p_tost == r.p_upper
  # 95%: t_{0.975, 1} = tan(0.475 pi) = 12.7062; 90%: t_{0.95, 1} = tan(0.45 pi) = 6.3138.
  assert r.interval == pytest.approx((1 - math.tan(0.475 * math.pi),
                                      1 + math.tan(0.475 * math.pi)), abs=1e-9)
  assert r.tost_interval == pytest.approx((1 - math.tan(0.45 * math.pi),
                                           1 + math.tan(0.45 * math.pi)), abs=1e-9)


def test_paired_test_against_scipy():
  st = pytest.importorskip("scipy.stats")
  rng = np.random.default_rng(1)
  for case in range(150):
    n = int(rng.integers(2, 13))
    d = rng.normal(rng.normal(0, 0.02), rng.uniform(0.001, 0.03), n)
    margin = float(rng.uniform(0.002, 0.05))
    alpha = float(rng.choice([0.05, 0.1]))
    r = verdicts.paired_test(d.tolist(), margin, alpha, name=f"case {case}")
    tol = dict(rel=1e-8, abs=1e-12)
    assert r.p == pytest.approx(st.ttest_1samp(d, 0.0).pvalue, **tol)
    lower = st.ttest_1samp(d, -margin, alternative="greater").pvalue  # H0: mean <= -margin.
    upper = st.ttest_1samp(d, margin, alternative="less").pvalue  # H0: mean >= margin.
    assert r.p_lower == pytest.approx(lower, **tol) and r.p_upper == pytest.approx(upper, **tol)
    assert r.p_tost == pytest.approx(max(lower, upper), **tol)
    se = st.sem(d)
    assert r.se == pytest.approx(se, rel=1e-10)
    assert r.interval == pytest.approx(st.t.interval(1 - alpha, n - 1, d.mean(), se), rel=1e-9)
    assert r.tost_interval == pytest.approx(st.t.interval(1 - 2 * alpha, n - 1, d.mean(), se),
                                            rel=1e-9)


def test_tost_equals_the_interval_with_twice_alpha_inside_the_margin():
  rng = np.random.default_rng(2)
  seen = set()
  for _ in range(300):
    n = int(rng.integers(2, 10))
    d = rng.normal(rng.normal(0, 0.01), rng.uniform(0.001, 0.02), n).tolist()
    r = verdicts.paired_test(d, float(rng.uniform(0.001, 0.04)))
    lo, hi = r.tost_interval
    if min(abs(lo + r.margin), abs(hi - r.margin)) < 1e-9:
      continue  # At the boundary to within the quantile's bisection.
    inside = -r.margin < lo and hi < r.margin
    assert inside == (r.p_tost < 0.05), (d, r)
    seen.add(inside)
  assert seen == {True, False}  # Both sides were tried.


def test_equal_differences_take_the_limits():
  r = verdicts.paired_test([0.0, 0.0, 0.0], margin=0.02)  # Identical models: exactly 0.
  assert (r.sd, r.se, r.p, r.p_tost, r.interval) == (0.0, 0.0, 1.0, 0.0, (0.0, 0.0))
  r = verdicts.paired_test([0.1, 0.1, 0.1], margin=0.02)
  assert (r.mean, r.p, r.p_lower, r.p_upper, r.p_tost) == (0.1, 0.0, 0.0, 1.0, 1.0)
  assert r.t == math.inf and r.interval == (0.1, 0.1)
  assert verdicts.paired_test([0.02, 0.02], margin=0.02).p_tost == 1.0  # Not inside (-m, m).


# ------------------------------------------------------------------------------- a family

CLEAR_DIFFERENCE = [0.10, 0.11, 0.09, 0.10, 0.12]
CLEAR_EQUIVALENCE = [0.001, -0.001, 0.0005, 0.0, -0.0005]
TWO_WIDE_SEEDS = [0.05, -0.04]
# Mean 0.03, deviations -0.03, -0.01, 0, 0.01, 0.03: sd = sqrt(0.002 / 4), se = 0.01, t = 3,
# df 4: p = 0.0399 alone. Second smallest p of four under Holm: 3 x 0.0399 = 0.12.
BORDERLINE = [0.00, 0.02, 0.03, 0.04, 0.06]


def test_family_verdicts_and_holm_changing_one():
  alone = verdicts.family({"borderline": BORDERLINE}, margin=0.02)["borderline"]
  assert alone.p == pytest.approx(0.0399, abs=1e-4) and alone.p_holm == alone.p
  assert alone.verdict == "different"
  f = verdicts.family({"clear": CLEAR_DIFFERENCE, "same": CLEAR_EQUIVALENCE,
                       "wide": TWO_WIDE_SEEDS, "borderline": BORDERLINE}, margin=0.02)
  assert list(f) == ["clear", "same", "wide", "borderline"]
  assert {k: c.verdict for k, c in f.items()} == {
      "clear": "different", "same": "equivalent", "wide": "inconclusive",
      "borderline": "inconclusive"}
  b = f["borderline"]
  assert b.p == pytest.approx(alone.p) and b.p_holm == pytest.approx(3 * alone.p)
  assert b.family_size == 4 and not any(c.within_margin_difference for c in f.values())
  # Holm's adjustments are those of holm() over the family's raw p-values.
  raw = verdicts.holm({k: c.p for k, c in f.items()})
  tost = verdicts.holm({k: c.p_tost for k, c in f.items()})
  assert {k: c.p_holm for k, c in f.items()} == raw.adjusted
  assert {k: c.p_tost_holm for k, c in f.items()} == tost.adjusted
  # Per-comparison margins: the same data judged against a declared margin below its spread.
  g = verdicts.family({"same": CLEAR_EQUIVALENCE, "wide": TWO_WIDE_SEEDS},
                      margin={"same": 0.0005, "wide": 0.02})
  assert g["same"].verdict == "inconclusive" and g["same"].margin == 0.0005


def test_min_effect_and_a_difference_within_the_margin():
  f = verdicts.family({"clear": CLEAR_DIFFERENCE}, margin=0.02, min_effect=0.2)
  assert f["clear"].verdict == "inconclusive"  # Shown, but smaller than the minimum effect.
  small = [0.005, 0.0051, 0.0049, 0.005, 0.0052]  # Surely > 0, surely inside +-0.02.
  c = verdicts.family({"small": small}, margin=0.02)["small"]
  assert c.verdict == "equivalent" and c.within_margin_difference
  assert c.p_holm < 0.05 and c.p_tost_holm < 0.05
  c = verdicts.family({"small": small}, margin=0.02, min_effect=0.01)["small"]
  assert c.verdict == "equivalent" and not c.within_margin_difference


def test_the_margin_must_be_declared():
  two = {"a - b": CLEAR_DIFFERENCE, "a - c": CLEAR_EQUIVALENCE}
  with pytest.raises(ValueError, match=r"a - c.*plan must declare"):
    verdicts.family(two, margin={"a - b": 0.02})
  for margin in (None, 0.0, -0.01, math.nan, "wide"):
    with pytest.raises(ValueError, match=r"a - b.*margin"):
      verdicts.family(two, margin=margin)
  with pytest.raises(ValueError, match=r"a - d.*declared"):
    verdicts.family(two, margin={"a - b": 0.02, "a - c": 0.02, "a - d": 0.02})
  with pytest.raises(ValueError, match="no comparisons"):
    verdicts.family({}, margin=0.02)


def test_fewer_than_two_seeds_or_a_missing_value_is_refused_by_name():
  with pytest.raises(ValueError, match=r"inn - lstm at N=8: 1 paired difference"):
    verdicts.family({"inn - lstm at N=8": [0.1], "x": CLEAR_DIFFERENCE}, margin=0.02)
  with pytest.raises(ValueError, match=r"inn - lstm: 0 paired difference"):
    verdicts.paired_test([], 0.02, name="inn - lstm")
  for d in ([0.1, math.nan, 0.2], [0.1, None, 0.2], [0.1, math.inf]):
    with pytest.raises(ValueError, match=r"^x: .*finite"):
      verdicts.family({"x": d}, margin=0.02)


def test_line():
  c = verdicts.Comparison(
      name="w", n=5, mean=-0.004, sd=0.0064, se=0.00286, df=4, t=-1.4, p=0.23,
      interval=(-0.0119, 0.0039), margin=0.02, p_lower=0.0004, p_upper=0.003, p_tost=0.003,
      tost_interval=(-0.010, 0.002), alpha=0.05, p_holm=0.46, p_tost_holm=0.009,
      min_effect=0.0, family_size=3, verdict="equivalent", within_margin_difference=False)
  assert verdicts.line(c, "workspace - attention at N=64") == (
      "workspace - attention at N=64: -0.004 [-0.012, +0.004], margin 0.02: equivalent "
      "(TOST p=0.003, Holm 0.009)")
  f = verdicts.family({"clear": CLEAR_DIFFERENCE, "wide": TWO_WIDE_SEEDS}, margin=0.02)
  assert verdicts.line(f["clear"]).startswith("clear: +0.104 [+0.090, +0.118], margin 0.02: "
                                              "different (p<0.001, Holm <0.001)")
  assert verdicts.line(f["wide"]).startswith("wide: +0.005 [")
  assert "inconclusive (p=" in verdicts.line(f["wide"]) and "TOST p=" in verdicts.line(f["wide"])


# --------------------------------------------------------------------- n-gram reference


def test_ngram_order_is_chosen_on_valid():
  rows = {1: {"valid_bpc": 3.0, "test_bpc": 3.1}, 2: {"valid_bpc": 2.1, "test_bpc": 2.2},
          3: {"valid_bpc": 2.0, "test_bpc": 2.3}, 4: {"valid_bpc": 2.05, "test_bpc": 1.9}}
  assert verdicts.ngram_order(rows) == 3  # Test would pick 4.
  for tie in ({3: {"valid_bpc": 2.0}, 2: {"valid_bpc": 2.0}, 4: {"valid_bpc": 2.0}},
              {2: {"valid_bpc": 2.0}, 3: {"valid_bpc": 2.0}}):
    assert verdicts.ngram_order(tie) == 2  # Ties go to the smaller order, in any row order.
  assert verdicts.ngram_order({"5": {"valid_bpc": 1.0}, "4": {"valid_bpc": 1.5}}) == "5"
  nats = {k: {"valid_nats": 5 - k if k < 4 else 9.0} for k in rows}  # 3 lowest: 2.0.
  assert verdicts.ngram_order(nats, select="valid_nats") == 3
  with pytest.raises(ValueError, match=r"order 2 has no finite 'valid_bpc'"):
    verdicts.ngram_order({1: {"valid_bpc": 3.0}, 2: {"test_bpc": 2.0}})
  with pytest.raises(ValueError, match="never on test"):
    verdicts.ngram_order(rows, select="test_bpc")
  with pytest.raises(ValueError, match="no orders"):
    verdicts.ngram_order({})
