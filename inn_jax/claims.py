"""The rules that judge the paper's claims C1-C5 from a study's runs (RESULTS.md).

Part of a study's pre-registered rules with inn_jax/stats.py: a study records this file's
content hash when its first run starts (benchmarks/study.py), and the report withholds every
verdict when it has changed since. Change it only together with a new study.

Inputs. `plan`: the study's plan (benchmarks/studies/<name>/plan.py as data); its RULES name the
stages and models each claim reads and every threshold. `records`: one dict per run, from the
run's files (inn_jax.report.records): stage, model, lr, seed, params, valid_bpc and test_bpc
(whole splits, fresh state per window; None when the run stopped on a non-finite loss),
diverged, valid_curve ([step, BPC] of the periodic validation), analysis (C4's). `ngram`:
{order: {"valid_bpc", "test_bpc"}} of the study's Kneser-Ney reference.

Selection and statistics. A model's best rate in a stage is the rate of its seed-0 run with the
lowest valid BPC (a non-finite run counts as +inf); its numbers are the test BPC of the seeds
run at that rate. Two models are compared by their per-seed differences (seed s of one against
seed s of the other: the same data order) with a two-sided t-interval (stats.paired); a
difference counts when the interval excludes 0 and |mean| > min_effect (stats.difference).

  C1 (c1): a run fails on a non-finite loss or a test BPC above the n-gram's of order
     fail_above_order; a model fails at a rate when every seed run there fails, converges when
     none does (else mixed). Holds: at some rate the Mamba stack fails and the INN converges.
  C2 (main_6m): holds if the upper end of INN - LSTM's interval <= lstm_margin and the lower end
     of Transformer - INN's > transformer_margin.
  C3 (sweep_2m): holds if no_comm - inn and static_comm - no_comm both count as > 0.
  C4 (c4): holds if every analysed seed has, in some layer, a hub (in-degree ratio >= hub and
     its bootstrap interval's lower end above the nulls' threshold) and a specialist (ratio <=
     specialist, upper end below the nulls' threshold); stats.neuron_roles defines the nulls.
  C5 (c5): settled by construction (the plan names the test); the two runs must agree within
     equal_within BPC at every common periodic validation and on test.
"""

from __future__ import annotations

import math

from . import stats

CANNOT = "cannot be tested here"
CLAIMS = {
    "C1": "Under the paper's protocol (AdamW, OneCycleLR at a high rate, clipping 1.0) a stack of "
          "Mamba blocks fails to converge while the INN converges (Table 2, §3.2).",
    "C2": "The INN matches an LSTM and clearly beats a Transformer of similar size (Table 2).",
    "C3": "No communication is worse than learned communication, and static communication is "
          "worse than none (Table 3).",
    "C4": "Hub neurons (in-degree >= 1.5x mean) and specialists (<= 0.6x) emerge in the learned "
          "graph (§3.6, A.3).",
    "C5": "The paper-faithful INN (identical neurons) gains from its N neurons.",
}


def runs(records, stage, model=None, lr=None, seed=None) -> list[dict]:
  return [r for r in records if r["stage"] == stage and model in (None, r["model"])
          and (lr is None or math.isclose(r["lr"], lr, rel_tol=1e-9))
          and seed in (None, r["seed"])]


def _key(value):
  return math.inf if value is None else value


def best_rate(records, stage, model, select="valid_bpc"):
  """The seed-0 rate with the lowest `select` (None: +inf); None without seed-0 runs."""
  found = runs(records, stage, model, seed=0)
  if not found:
    return None
  return min(found, key=lambda r: (_key(r[select]), r["lr"]))["lr"]


def at_best(records, stage, model, rules) -> dict:
  """{seed: record} at the model's best rate in the stage ({} if none)."""
  lr = best_rate(records, stage, model, rules["select"])
  if lr is None:
    return {}
  return {r["seed"]: r for r in runs(records, stage, model, lr)}


def measure(found: dict, rules) -> dict:
  return {s: r[rules["measure"]] for s, r in found.items()}


def _f(v, digits=4) -> str:
  return "-" if v is None else f"{v:.{digits}f}"


def interval(d) -> str:
  """'+0.0123 [+0.0050, +0.0196]' (mean and interval of a paired difference)."""
  if d is None:
    return "-"
  if d["lo"] is None:
    return f"{d['mean']:+.4f} (one seed: no interval)"
  return f"{d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]"


def cell(found: dict, rules) -> str:
  """mean +- sd (n) of the measure over the seeds found; 'diverged' when none finished."""
  s = stats.summary(measure(found, rules).values())
  if s is None:
    return "diverged" if found else "-"
  sd = f" ± {s['sd']:.4f}" if s["sd"] is not None else ""
  return f"{s['mean']:.4f}{sd} (n={s['n']})"


def _verdict(claim, verdict, rule, lines, **extra) -> dict:
  return {"claim": claim, "verdict": verdict, "rule": rule, "lines": lines, **extra}


def c1(plan, records, ngram) -> dict:
  rules, r = plan["RULES"], plan["RULES"]["c1"]
  order = r["fail_above_order"]
  rule = (f"a run fails on a non-finite loss or test BPC above the {order}-gram's; a model fails "
          "at a rate when every seed there fails; holds if at some rate the Mamba stack fails "
          "and the INN converges")
  floor = (ngram.get(order) or {}).get("test_bpc")
  found = runs(records, r["stage"])
  if floor is None or not found:
    return _verdict("C1", CANNOT, rule, [f"Needs stage `{r['stage']}` and the {order}-gram."])

  def status(lr, model):
    rs = runs(records, r["stage"], model, lr)
    if not rs:
      return None, "-"
    fails = [x["diverged"] or x["test_bpc"] is None or x["test_bpc"] > floor for x in rs]
    text = ", ".join("diverged" if x["test_bpc"] is None else f"{x['test_bpc']:.4f}"
                     for x in sorted(rs, key=lambda x: x["seed"]))
    return ("fails" if all(fails) else "converges" if not any(fails) else "mixed"), text

  lines = [f"Fails above the {order}-gram's test BPC {floor:.4f}.", "",
           "| peak lr | Mamba stack test BPC (seeds) | status | INN test BPC (seeds) | status |",
           "|---|---|---|---|---|"]
  holds, reverse, both = [], [], 0
  for lr in sorted({x["lr"] for x in found}):
    sm, tm = status(lr, r["mamba"])
    si, ti = status(lr, r["inn"])
    lines.append(f"| {lr:g} | {tm} | {sm or '-'} | {ti} | {si or '-'} |")
    if sm and si:
      both += 1
      holds += [lr] if (sm, si) == ("fails", "converges") else []
      reverse += [lr] if (sm, si) == ("converges", "fails") else []
  if not both:
    return _verdict("C1", CANNOT, rule, lines + ["", "No rate has both models."])
  lines.append("")
  lines.append("The Mamba stack fails where the INN converges at lr " +
               (", ".join(f"{x:g}" for x in holds) if holds else "none") + "; the INN fails "
               "where the Mamba stack converges at lr " +
               (", ".join(f"{x:g}" for x in reverse) if reverse else "none") + ".")
  return _verdict("C1", "holds" if holds else "does not hold", rule, lines,
                  mamba_fails_inn_converges=holds, inn_fails_mamba_converges=reverse)


def compare(plan, records, stage, a, b) -> dict | None:
  """Paired per-seed differences a - b of the measure at each model's best rate."""
  rules = plan["RULES"]
  return stats.paired(measure(at_best(records, stage, a, rules), rules),
                      measure(at_best(records, stage, b, rules), rules), rules["level"])


def overfits(plan, found: dict) -> list[int]:
  """Seeds whose last periodic valid BPC exceeds their lowest by more than overfit_rise."""
  rise = plan["RULES"]["overfit_rise"]
  out = []
  for seed, rec in sorted(found.items()):
    curve = [b for _, b in rec.get("valid_curve") or []]
    if curve and curve[-1] - min(curve) > rise:
      out.append(seed)
  return out


def c2(plan, records, ngram) -> dict:
  rules, r = plan["RULES"], plan["RULES"]["c2"]
  rule = (f"upper end of the {rules['level']:.0%} interval of INN - LSTM <= {r['lstm_margin']} "
          f"and lower end of Transformer - INN's > {r['transformer_margin']}; paired seeds at "
          "each model's best rate")
  lines = ["| model | best peak lr | test BPC, mean ± sd | over-fits (seeds) |",
           "|---|---|---|---|"]
  over = {}
  for m in (r["inn"], r["lstm"], r["transformer"], r["mamba"]):
    found = at_best(records, r["stage"], m, rules)
    over[m] = overfits(plan, found)
    lr = best_rate(records, r["stage"], m, rules["select"])
    lines.append(f"| {m} | {'-' if lr is None else f'{lr:g}'} | {cell(found, rules)} | "
                 f"{over[m] or 'no'} |")
  d_l = compare(plan, records, r["stage"], r["inn"], r["lstm"])
  d_t = compare(plan, records, r["stage"], r["transformer"], r["inn"])
  lines += ["", f"INN - LSTM {interval(d_l)}; Transformer - INN {interval(d_t)}."]
  if d_l is None or d_t is None or d_l["lo"] is None or d_t["lo"] is None:
    return _verdict("C2", CANNOT, rule, lines + ["", "Needs two or more paired seeds."])
  ok = d_l["hi"] <= r["lstm_margin"] and d_t["lo"] > r["transformer_margin"]
  verdict = "holds" if ok else "does not hold"
  flagged = sorted(m for m, seeds in over.items() if seeds)
  if flagged:
    verdict += (f" (provisional: {', '.join(flagged)} over-fit at dropout 0; the plan asks for "
                "a study with a second dropout value for every model)")
  vs_lstm = stats.difference(d_l, rules["min_effect"])
  reading = {"greater": "worse than", "less": "better than", "tie": "tied with"}.get(
      vs_lstm, "not separable from (one seed)")
  lines.append(f"The INN is {reading} the LSTM (a difference counts beyond "
               f"{rules['min_effect']} BPC with its interval excluding 0).")
  return _verdict("C2", verdict, rule, lines, inn_minus_lstm=d_l, transformer_minus_inn=d_t)


def c3(plan, records, ngram) -> dict:
  rules, r = plan["RULES"], plan["RULES"]["c3"]
  rule = (f"holds if no_comm - inn and static_comm - no_comm both exceed {rules['min_effect']} "
          f"with {rules['level']:.0%} intervals excluding 0; parameters within "
          f"{r['param_match']:.0%} of the INN's")
  lines = ["| row | parameters | best peak lr | test BPC, mean ± sd |", "|---|---|---|---|"]
  params = {}
  for m in (r["inn"], r["none"], r["static"]):
    found = at_best(records, r["stage"], m, rules)
    params[m] = sorted({x["params"] for x in found.values()})
    lr = best_rate(records, r["stage"], m, rules["select"])
    lines.append(f"| {m} | {', '.join(f'{p:,}' for p in params[m]) or '-'} | "
                 f"{'-' if lr is None else f'{lr:g}'} | {cell(found, rules)} |")
  a = compare(plan, records, r["stage"], r["none"], r["inn"])
  b = compare(plan, records, r["stage"], r["static"], r["none"])
  lines += ["", f"no_comm - inn {interval(a)}; static_comm - no_comm {interval(b)}."]
  if a is None or b is None or a["lo"] is None or b["lo"] is None:
    return _verdict("C3", CANNOT, rule, lines + ["", "Needs two or more paired seeds."])
  base = params[r["inn"]][0] if params[r["inn"]] else None
  off = [m for m in (r["none"], r["static"])
         if base is None or not params[m] or abs(params[m][0] - base) > r["param_match"] * base]
  if off:
    return _verdict("C3", CANNOT, rule, lines + ["", f"Parameters not matched: {off}."])
  da, db = (stats.difference(x, rules["min_effect"]) for x in (a, b))
  verdict = "holds" if (da, db) == ("greater", "greater") else (
      f"does not hold (no communication vs learned: {_word(da, 'worse', 'better')}; static vs "
      f"none: {_word(db, 'worse', 'better')})")
  return _verdict("C3", verdict, rule, lines, none_minus_inn=a, static_minus_none=b)


def _word(d, greater, less):
  return {"greater": greater, "less": less, "tie": "tie"}.get(d, "no interval")


def roles(layer: dict, r) -> tuple[list, list]:
  """(hubs, specialists) of one analysed layer under the plan's factors."""
  ratio, lo, hi = layer["ratio"], layer["lo"], layer["hi"]
  hubs = [m for m in range(len(ratio))
          if ratio[m] >= r["hub"] and lo[m] > layer["hub_threshold"]]
  specs = [m for m in range(len(ratio))
           if ratio[m] <= r["specialist"] and hi[m] < layer["specialist_threshold"]]
  return hubs, specs


def c4(plan, records, ngram) -> dict:
  r = plan["RULES"]["c4"]
  rule = (f"every analysed seed has, in some layer, a hub (in-degree >= {r['hub']} x mean, "
          f"interval above both nulls' {r['quantile']:.0%} quantile) and a specialist (<= "
          f"{r['specialist']} x mean, below the nulls')")
  lines = ["| seed | layer | hubs | specialists | largest / smallest ratio [interval] | null "
           "thresholds (hub, specialist) |", "|---|---|---|---|---|---|"]
  seeds = {}
  for rec in sorted(runs(records, r["stage"], r["inn"]), key=lambda x: x["seed"]):
    a = rec.get("analysis")
    if not a or "layers" not in a:
      lines.append(f"| {rec['seed']} | - | not analysed | | | |")
      continue
    params = a["layers"][0]["params"] if a["layers"] else {}
    wanted = {k: r[k] for k in ("quantile", "level", "bootstrap", "shuffles")}
    if {k: params.get(k) for k in wanted} != wanted:
      lines.append(f"| {rec['seed']} | - | analysed with {params}, not the plan's {wanted} | | | |")
      continue
    found = [False, False]
    for i, layer in enumerate(a["layers"]):
      hubs, specs = roles(layer, r)
      found[0] |= bool(hubs)
      found[1] |= bool(specs)
      big, small = max(range(len(layer["ratio"])), key=layer["ratio"].__getitem__), \
          min(range(len(layer["ratio"])), key=layer["ratio"].__getitem__)
      lines.append(
          f"| {rec['seed']} | {i} | {hubs} | {specs} | {layer['ratio'][big]:.3f} "
          f"[{layer['lo'][big]:.3f}, {layer['hi'][big]:.3f}] / {layer['ratio'][small]:.3f} "
          f"[{layer['lo'][small]:.3f}, {layer['hi'][small]:.3f}] | "
          f"{layer['hub_threshold']:.3f}, {layer['specialist_threshold']:.3f} |")
    seeds[rec["seed"]] = all(found)
  if not seeds:
    return _verdict("C4", CANNOT, rule, lines + ["", f"No analysis of `{r['inn']}` runs."])
  lines += ["", f"Seeds with a hub and a specialist: {sum(seeds.values())} of {len(seeds)}."]
  return _verdict("C4", "holds" if all(seeds.values()) else "does not hold", rule, lines)


def c5(plan, records, ngram) -> dict:
  r = plan["RULES"]["c5"]
  rule = (f"settled by construction ({r['construction']}); the N and N=1 runs must agree within "
          f"{r['equal_within']} BPC at every periodic validation and on test")
  many, one = runs(records, r["stage"], r["n"]), runs(records, r["stage"], r["one"])
  if not many or not one or many[0]["test_bpc"] is None or one[0]["test_bpc"] is None:
    return _verdict("C5", CANNOT, rule, [f"Needs `{r['n']}` and `{r['one']}` in `{r['stage']}`."])
  a, b = many[0], one[0]
  curve_b = dict(map(tuple, b["valid_curve"]))
  gaps = [abs(v - curve_b[s]) for s, v in a["valid_curve"] if s in curve_b]
  gap = max(gaps + [abs(a["test_bpc"] - b["test_bpc"])])
  lines = ["| run | parameters | test BPC |", "|---|---|---|",
           f"| {r['n']} | {a['params']:,} | {a['test_bpc']:.4f} |",
           f"| {r['one']} | {b['params']:,} | {b['test_bpc']:.4f} |", "",
           f"Largest gap over {len(gaps)} periodic validations and test: {gap:.2g} BPC."]
  if gap <= r["equal_within"]:
    return _verdict("C5", "does not hold (settled by construction: the N neurons compute the "
                    "one stream; the runs agree)", rule, lines, gap=gap)
  return _verdict("C5", "inconclusive (the runs differ beyond the construction's float "
                  "rounding: investigate)", rule, lines, gap=gap)


JUDGES = {"C1": c1, "C2": c2, "C3": c3, "C4": c4, "C5": c5}


def judge(plan, records, ngram) -> dict:
  return {name: fn(plan, records, ngram) for name, fn in JUDGES.items()}
