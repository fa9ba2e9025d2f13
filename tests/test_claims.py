"""inn_jax.claims' rules on records built by hand, under the claims-v2 plan's thresholds."""

import pathlib

import pytest

from inn_jax import claims, studies

REPO = pathlib.Path(__file__).resolve().parents[1]
PLAN = studies.load_plan(REPO / "benchmarks" / "studies" / "claims-v2")
NGRAM = {2: {"test_bpc": 3.4, "valid_bpc": 3.4}, 3: {"test_bpc": 2.7, "valid_bpc": 2.7},
         5: {"test_bpc": 1.8, "valid_bpc": 1.8}}


def rec(stage, model, lr, seed, test, valid=None, curve=None, params=96539, analysis=None):
  return {"stage": stage, "model": model, "lr": lr, "seed": seed, "params": params,
          "test_bpc": test, "valid_bpc": test if valid is None else valid,
          "diverged": test is None, "valid_curve": curve or [[100, 2.5], [200, 2.2]],
          "analysis": analysis}


def sweep(stage, model, best_lr, tests, valid_at=None):
  """A sweep (seed 0 at two rates, best_lr the better on valid) and seeds 1, 2 at best_lr."""
  other = 2e-3 if best_lr != 2e-3 else 1e-2
  out = [rec(stage, model, other, 0, 9.0, valid=9.0)]
  out += [rec(stage, model, best_lr, s, t) for s, t in enumerate(tests)]
  return out


def test_best_rate_is_chosen_on_valid_and_diverged_counts_as_infinite():
  rs = [rec("m", "a", 1e-2, 0, 1.9, valid=2.0), rec("m", "a", 2e-3, 0, 1.8, valid=2.1),
        rec("m", "a", 5e-2, 0, None), rec("m", "a", 2e-3, 1, 1.0)]
  assert claims.best_rate(rs, "m", "a") == 1e-2  # Lowest valid, though another's test is lower.
  assert sorted(claims.at_best(rs, "m", "a", PLAN["RULES"])) == [0]


def test_c2_equivalence_to_the_lstm_and_a_clear_win_over_the_transformer():
  base = (sweep("main_6m", "inn", 1e-2, [1.80, 1.81, 1.79]) +
          sweep("main_6m", "lstm", 2e-2, [1.79, 1.80, 1.79]) +
          sweep("main_6m", "transformer", 5e-3, [1.90, 1.92, 1.91]) +
          sweep("main_6m", "mamba", 1e-2, [1.75, 1.76, 1.75]))
  got = claims.c2(PLAN, base, NGRAM)
  assert got["verdict"] == "holds"
  assert got["inn_minus_lstm"]["hi"] <= 0.03 and got["transformer_minus_inn"]["lo"] > 0.02
  worse = [r if r["model"] != "lstm" else {**r, "test_bpc": r["test_bpc"] - 0.05} for r in base]
  got = claims.c2(PLAN, worse, NGRAM)
  assert got["verdict"] == "does not hold" and "INN is worse than the LSTM" in got["lines"][-1]
  near_tf = [r if r["model"] != "transformer" else {**r, "test_bpc": r["test_bpc"] - 0.09}
             for r in base]
  assert claims.c2(PLAN, near_tf, NGRAM)["verdict"] == "does not hold"
  one_seed = [r for r in base if r["seed"] == 0]
  assert claims.c2(PLAN, one_seed, NGRAM)["verdict"] == claims.CANNOT


def test_c2_is_provisional_when_a_best_run_over_fits():
  rising = [[100, 2.0], [200, 1.9], [300, 1.95]]  # Last 0.05 above the lowest: over-fits.
  rs = (sweep("main_6m", "inn", 1e-2, [1.80, 1.81, 1.79]) +
        sweep("main_6m", "lstm", 2e-2, [1.79, 1.80, 1.79]) +
        sweep("main_6m", "transformer", 5e-3, [1.90, 1.92, 1.91]))
  rs[1]["valid_curve"] = rising
  got = claims.c2(PLAN, rs, NGRAM)
  assert got["verdict"].startswith("holds (provisional: inn over-fit")


def test_c3_needs_both_orderings_and_matched_parameters():
  inn = sweep("sweep_2m", "inn", 1e-2, [1.90, 1.91, 1.92])
  none = sweep("sweep_2m", "no_comm", 1e-2, [1.96, 1.98, 1.97])
  static = sweep("sweep_2m", "static_comm", 1e-2, [2.02, 2.05, 2.03])
  for r in none + static:
    r["params"] = 94_700
  assert claims.c3(PLAN, inn + none + static, NGRAM)["verdict"] == "holds"
  better_static = [{**r, "test_bpc": r["test_bpc"] - 0.1} for r in static]
  got = claims.c3(PLAN, inn + none + better_static, NGRAM)["verdict"]
  assert got.startswith("does not hold") and "static vs none: better" in got
  small = [{**r, "params": 63_000} for r in none]  # 35% fewer parameters: not an ablation.
  assert claims.c3(PLAN, inn + small + static, NGRAM)["verdict"] == claims.CANNOT


def test_c1_fails_above_the_trigram_or_non_finite_in_every_seed():
  def grid(model, values):
    return [rec("c1", model, lr, s, v) for (lr, s), v in values.items()]
  inn = grid("inn_paper-6l", {(4e-4, 0): 2.3, (1e-2, 0): 2.0, (1e-2, 1): 2.0, (3e-2, 0): 2.1,
                              (3e-2, 1): 2.2})
  mamba = grid("mamba_paper-6l", {(4e-4, 0): 2.2, (1e-2, 0): 1.9, (1e-2, 1): 1.95,
                                  (3e-2, 0): None, (3e-2, 1): 2.9})
  got = claims.c1(PLAN, inn + mamba, NGRAM)
  assert got["verdict"] == "holds" and got["mamba_fails_inn_converges"] == [3e-2]
  mixed = [r if (r["model"], r["lr"], r["seed"]) != ("mamba_paper-6l", 3e-2, 1)
           else {**r, "test_bpc": 2.5} for r in inn + mamba]  # One seed converges: mixed.
  assert claims.c1(PLAN, mixed, NGRAM)["verdict"] == "does not hold"
  reverse = [{**r, "test_bpc": 3.0} if r["model"] == "inn_paper-6l" and r["lr"] == 4e-4 else r
             for r in mixed]
  got = claims.c1(PLAN, reverse, NGRAM)
  assert got["inn_fails_mamba_converges"] == [4e-4] and "INN fails" in got["lines"][-1]
  assert claims.c1(PLAN, inn + mamba, {})["verdict"] == claims.CANNOT


def _layer(ratio, lo, hi, hub_at=1.1, spec_at=0.9):
  params = {k: PLAN["RULES"]["c4"][k] for k in ("quantile", "level", "bootstrap", "shuffles")}
  return {"ratio": ratio, "lo": lo, "hi": hi, "hub_threshold": hub_at,
          "specialist_threshold": spec_at, "params": params}


def test_c4_counts_roles_beyond_the_nulls_in_every_seed():
  hub = _layer([1.7, 0.5, 0.9, 0.9], [1.6, 0.4, 0.8, 0.8], [1.8, 0.6, 1.0, 1.0])
  flat = _layer([1.0] * 4, [0.95] * 4, [1.05] * 4)
  rs = [rec("c4", "inn-n16", 1e-2, s, 1.9, analysis={"layers": [flat, hub]}) for s in (0, 1)]
  assert claims.c4(PLAN, rs, NGRAM)["verdict"] == "holds"
  weak = _layer([1.7, 0.5, 0.9, 0.9], [1.05, 0.4, 0.8, 0.8], [1.8, 0.95, 1.0, 1.0])
  rs[1]["analysis"] = {"layers": [weak]}  # Interval reaches into the null: no role.
  got = claims.c4(PLAN, rs, NGRAM)
  assert got["verdict"] == "does not hold" and "1 of 2" in got["lines"][-1]
  other = dict(hub, params={**hub["params"], "shuffles": 3})
  rs = [rec("c4", "inn-n16", 1e-2, 0, 1.9, analysis={"layers": [other]})]
  assert claims.c4(PLAN, rs, NGRAM)["verdict"] == claims.CANNOT


def test_c5_is_settled_by_construction_and_the_runs_must_agree():
  a = rec("c5", "inn_paper", 2e-3, 0, 2.3, curve=[[62, 3.0], [124, 2.6]])
  b = rec("c5", "inn_paper-n1", 2e-3, 0, 2.3005, curve=[[62, 3.001], [124, 2.6]])
  got = claims.c5(PLAN, [a, b], NGRAM)
  assert got["verdict"].startswith("does not hold (settled by construction")
  assert got["gap"] == pytest.approx(0.001)
  b["valid_curve"] = [[62, 3.2], [124, 2.6]]
  assert claims.c5(PLAN, [a, b], NGRAM)["verdict"].startswith("inconclusive")
  assert claims.c5(PLAN, [a], NGRAM)["verdict"] == claims.CANNOT
