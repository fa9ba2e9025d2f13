"""The paper's claims C1-C5 judged from a report (inn_jax.report.build): RESULTS.md.

Each claim reads named studies (folders of benchmarks/study.py's layout, <root>/<study>/<run>)
and rows by config variant (config.name after ":", as configs/study.py and configs/text8.py
name them), so the same rules judge the CPU study and the paper-scale runs. Every number comes
from the report, which read it from the runs' files; a claim whose studies or rows are missing is
"cannot be tested here".

The measure is the test BPC with a fresh state per window (the paper's Table 2 reports test
BPC), mean over seeds. Two rows differ when their means differ by more than the tolerance
tol = max(0.02, each row's seed spread (max - min)); within it they tie.

  C1 (c1_lr: mamba and inn at several optim.lr): a row converged if it finished and its BPC is
     within 0.5 of the sweep's best; else it diverged (non-finite loss) or did not converge.
     Holds: at some rate the Mamba stack did not converge (or diverged) and the INN converged.
     Does not hold: at every rate both ran, the Mamba stack converged wherever the INN did.
  C2 (table2, equal tokens; table2_flops at equal FLOPs as a second reading): holds for an INN
     form if INN - LSTM <= tol (matches the LSTM, or beats it: the paper's point is that the INN
     is no worse than the LSTM; its Table 2 has it 0.023 above) and Transformer - INN > tol
     (clearly beats). The reading says which: matches, beats or worse.
  C3 (table3): holds if no_comm - inn > tol (no communication worse than learned) and
     static_comm - no_comm > tol (static worse than none).
  C4 (analysis/report.json of table2's inn runs, python -m inn_jax.analyze): holds if every
     analysed seed has at least one hub (in-degree >= 1.5 x mean) and one specialist (<= 0.6 x
     mean) in some layer. The paper form (identical neurons, exactly uniform attention) is shown
     as the control.
  C5 (c5: inn_paper at N neurons and at N=1): holds if BPC(N=1) - BPC(N) > tol (the paper-code
     INN gains from its neurons); the cost is the ratio of training FLOPs and of train time.
"""

from __future__ import annotations

import json

TOL = 0.02
CONVERGED_WITHIN = 0.5
METRIC = "test_bpc_fresh"
STUDIES = {"C1": "c1_lr", "C2": "table2", "C2_flops": "table2_flops", "C3": "table3",
           "C4": "table2", "C5": "c5"}
CLAIMS = {
    "C1": "Under the paper's protocol (AdamW, OneCycleLR at a high rate, clipping 1.0) a stack of "
          "Mamba blocks fails to converge while the INN converges (Table 2, §3.2).",
    "C2": "The INN matches an LSTM and clearly beats a Transformer of similar size (Table 2).",
    "C3": "No communication is worse than learned communication, and static communication is "
          "worse than none (Table 3).",
    "C4": "Hub neurons (in-degree >= 1.5x mean) and specialists emerge in the learned graph "
          "(§3.6, A.3).",
    "C5": "The paper-faithful INN (identical neurons) gains from its N neurons.",
}
CANNOT = "cannot be tested here"


def _rows(report: dict, study: str) -> list[dict]:
  return report["studies"].get(study, {}).get("rows", [])


def _find(rows, variant: str, **flat) -> dict | None:
  """The row of `variant` whose config has the flat keys given (with "." as "__")."""
  for row in rows:
    key = json.loads(row["key"])
    if row["variant"] == variant and all(key.get(k.replace("__", ".")) == v
                                         for k, v in flat.items()):
      return row
  return None


def _m(row) -> float | None:
  s = row.get(METRIC) if row else None
  return s["mean"] if s else None


def _spread(row) -> float:
  s = row.get(METRIC) if row else None
  return s["max"] - s["min"] if s else 0.0


def tol(*rows) -> float:
  return max(TOL, *(_spread(r) for r in rows))


def _f(v, digits=4) -> str:
  return "-" if v is None else f"{v:.{digits}f}"


def _cell(row) -> str:
  s = row.get(METRIC) if row else None
  if s is None:
    return "diverged" if row and row["diverged"] else "-"
  if len(s["values"]) == 1:
    return _f(s["mean"])
  return f"{_f(s['mean'])} ({_f(s['min'])}, {_f(s['max'])})"


def _verdict(claim, verdict, rule, lines) -> dict:
  return {"claim": claim, "verdict": verdict, "rule": rule, "lines": lines}


def c1(report: dict) -> dict:
  rule = (f"converged = finished and test BPC within {CONVERGED_WITHIN} of the sweep's best; "
          "holds if at some rate the Mamba stack did not converge and the INN did")
  rows = _rows(report, STUDIES["C1"])
  lrs = sorted({r["lr"] for r in rows if r["variant"] in ("mamba", "inn")})
  finished = [_m(r) for r in rows if _m(r) is not None]
  if not finished or not lrs:
    return _verdict("C1", CANNOT, rule, [f"no runs in study `{STUDIES['C1']}`."])
  best = min(finished)

  def status(row):
    if row is None:
      return None
    if _m(row) is None:
      return "diverged" if row["diverged"] else "not finished"
    return "converged" if _m(row) <= best + CONVERGED_WITHIN else "did not converge"

  lines = ["| peak lr | Mamba stack test BPC | status | INN test BPC | status |",
           "|---|---|---|---|---|"]
  both, contrary = 0, []
  for lr in lrs:
    mamba, inn = _find(rows, "mamba", optim__lr=lr), _find(rows, "inn", optim__lr=lr)
    sm, si = status(mamba), status(inn)
    lines.append(f"| {lr:g} | {_cell(mamba)} | {sm or '-'} | {_cell(inn)} | {si or '-'} |")
    if sm and si:
      both += 1
      if sm != "converged" and si == "converged":
        contrary.append(lr)
  lines += ["", f"Sweep's best test BPC {_f(best)}; converged below {_f(best + CONVERGED_WITHIN)}."]
  if both == 0:
    return _verdict("C1", CANNOT, rule, lines + ["No rate has both models."])
  if contrary:
    lines.append("The Mamba stack fails where the INN converges at lr " +
                 ", ".join(f"{lr:g}" for lr in contrary) + ".")
    return _verdict("C1", "holds", rule, lines)
  return _verdict("C1", "does not hold", rule, lines)


def _c2_rows(rows, inn_variant):
  inn, lstm, tf = (_find(rows, v) for v in (inn_variant, "lstm", "transformer"))
  if None in (_m(inn), _m(lstm), _m(tf)):
    return None, "missing or diverged rows"
  t_l, t_t = tol(inn, lstm), tol(inn, tf)
  d_l, d_t = _m(inn) - _m(lstm), _m(tf) - _m(inn)
  ok = d_l <= t_l and d_t > t_t
  vs_lstm = "matches" if abs(d_l) <= t_l else "beats" if d_l < 0 else "worse"
  return ok, (f"INN - LSTM {d_l:+.4f} (tol {t_l:.4f}: {vs_lstm}), Transformer - INN {d_t:+.4f} "
              f"(tol {t_t:.4f}: "
              f"{'clearly beats' if d_t > t_t else 'does not clearly beat'})")


def c2(report: dict) -> dict:
  rule = (f"matches or beats the LSTM: INN - LSTM <= tol; clearly beats the Transformer: "
          f"Transformer - INN > tol; tol = "
          f"max({TOL}, seed spreads); equal tokens (table2), equal FLOPs (table2_flops) beside")
  lines = ["| study | INN form | INN | LSTM | Transformer | Mamba stack | reading |",
           "|---|---|---|---|---|---|---|"]
  verdicts = {}
  for study in (STUDIES["C2"], STUDIES["C2_flops"]):
    rows = _rows(report, study)
    for v in ("inn", "inn_paper"):
      ok, text = _c2_rows(rows, v)
      if ok is not None or _find(rows, v):
        lines.append(f"| {study} | {v} | {_cell(_find(rows, v))} | {_cell(_find(rows, 'lstm'))} "
                     f"| {_cell(_find(rows, 'transformer'))} | {_cell(_find(rows, 'mamba'))} | "
                     f"{text} |")
      if study == STUDIES["C2"]:
        verdicts[v] = ok
  if all(ok is None for ok in verdicts.values()):
    return _verdict("C2", CANNOT, rule, lines + ["", "No complete equal-token rows."])
  lrs = sorted({r["lr"] for r in _rows(report, STUDIES["C2"]) if r.get("lr") is not None})
  # A caveat the reader needs: a baseline far behind may only be off its best rate.
  lines += ["", "Every row at peak lr " + ", ".join(f"{lr:g}" for lr in lrs) + "; only the Mamba "
            f"stack's and the INN's rates are swept (C1), not the LSTM's or the Transformer's."]
  text = "; ".join(f"{v}: " + (CANNOT if ok is None else "holds" if ok else "does not hold")
                   for v, ok in verdicts.items())
  main = verdicts.get("inn")
  verdict = CANNOT if main is None else "holds" if main else "does not hold"
  return _verdict("C2", f"{verdict} (default form; {text})", rule, lines)


def c3(report: dict) -> dict:
  rule = "holds if no_comm - inn > tol and static_comm - no_comm > tol"
  rows = _rows(report, STUDIES["C3"])
  inn, none, static = (_find(rows, v) for v in ("inn", "no_comm", "static_comm"))
  lines = ["| learned (inn) | none (no_comm) | static (static_comm) |", "|---|---|---|",
           f"| {_cell(inn)} | {_cell(none)} | {_cell(static)} |", ""]
  if None in (_m(inn), _m(none), _m(static)):
    return _verdict("C3", CANNOT, rule, lines + ["Missing or diverged rows."])
  a, ta = _m(none) - _m(inn), tol(none, inn)
  b, tb = _m(static) - _m(none), tol(static, none)
  lines.append(f"no_comm - inn {a:+.4f} (tol {ta:.4f}); static_comm - no_comm {b:+.4f} "
               f"(tol {tb:.4f}).")
  parts = (a > ta, b > tb)
  verdict = "holds" if all(parts) else (
      "does not hold" + (" (learned beats none; static is not worse than none)" if parts[0] else
                         " (no communication is not worse than learned)"))
  return _verdict("C3", verdict, rule, lines)


def c4(report: dict) -> dict:
  rule = "holds if every analysed seed of the INN has a hub and a specialist in some layer"
  rows = _rows(report, STUDIES["C4"])
  lines = ["| INN form | seed | uniform attention | layer: hubs / specialists / average degree |",
           "|---|---|---|---|"]
  found = {}
  for v in ("inn", "inn_paper"):
    row = _find(rows, v)
    for a in row["analysis"] if row else []:
      if "skipped" in a:
        lines.append(f"| {v} | {a['seed']} | - | {a['skipped']} |")
        continue
      layers = "; ".join(f"{l['layer']}: {l['hubs']} / {l['specialists']} / "
                         f"{l['average_degree']:.2f}" for l in a["layers"])
      lines.append(f"| {v} | {a['seed']} | {a['uniform']} | {layers} |")
      found.setdefault(v, []).append(any(l["hubs"] for l in a["layers"]) and
                                     any(l["specialists"] for l in a["layers"]))
  if not found.get("inn"):
    return _verdict("C4", CANNOT, rule, lines + ["", "No analysis of the INN's runs."])
  verdict = "holds" if all(found["inn"]) else "does not hold"
  return _verdict("C4", verdict, rule, lines + [
      "", f"Seeds with a hub and a specialist: {sum(found['inn'])} of {len(found['inn'])}."])


def c5(report: dict) -> dict:
  rule = "holds if BPC(N=1) - BPC(N) > tol; cost = FLOPs and train-time ratios N / N=1"
  rows = [r for r in _rows(report, STUDIES["C5"]) if r["variant"] == "inn_paper"]
  one = next((r for r in rows if json.loads(r["key"]).get("model.n_neurons") == 1), None)
  many = next((r for r in rows if json.loads(r["key"]).get("model.n_neurons", 1) > 1), None)
  if _m(one) is None or _m(many) is None:
    return _verdict("C5", CANNOT, rule, [f"Needs inn_paper at N > 1 and N = 1 in study "
                                         f"`{STUDIES['C5']}`."])
  n = json.loads(many["key"])["model.n_neurons"]
  gain, t = _m(one) - _m(many), tol(one, many)

  def ratio(key):
    a, b = many.get(key), one.get(key)
    return f"{a['mean'] / b['mean']:.2f}x" if a and b and b["mean"] else "n/a"

  lines = [f"| N | params | test BPC | train FLOPs | train s |", "|---|---|---|---|---|"]
  for r in (many, one):
    lines.append(f"| {json.loads(r['key'])['model.n_neurons']} | "
                 f"{', '.join(f'{p:,}' for p in r['params'])} | {_cell(r)} | "
                 f"{r['train_flops']['mean'] if r['train_flops'] else float('nan'):.3g} | "
                 f"{r['train_time_s']['mean']:.0f} |")
  lines += ["", f"BPC(N=1) - BPC(N={n}) {gain:+.4f} (tol {t:.4f}); cost of N={n}: "
                f"{ratio('train_flops')} the FLOPs, {ratio('train_time_s')} the train time."]
  return _verdict("C5", "holds" if gain > t else "does not hold", rule, lines)


JUDGES = {"C1": c1, "C2": c2, "C3": c3, "C4": c4, "C5": c5}


def judge(report: dict) -> dict:
  return {name: fn(report) for name, fn in JUDGES.items()}


def _setup(report: dict) -> list[str]:
  runs = report["_runs"]
  if not runs:
    return []
  data = {json.dumps({k: r["config"]["data"].get(k) for k in ("name", "normalize", "path")})
          for r in runs}
  devices = sorted({f"{r['results']['device_count']} x {r['results']['device_kind']}"
                    for r in runs if r["results"]})
  params = sorted({p for s in report["studies"].values() for row in s["rows"]
                   for p in row["params"]})
  return [f"Runs: {len(report['unique_runs'])} trained ({len(runs)} run folders), on "
          f"{', '.join(devices)}; data: " + "; ".join(
              ", ".join(f"{k} {v}" for k, v in json.loads(d).items() if v) for d in sorted(data))
          + (f"; {params[0]:,} to {params[-1]:,} parameters." if params else "."), ""]


def results_markdown(report: dict, tables_md: str, plan: dict | None,
                     paper_commands: str | None) -> str:
  """RESULTS.md: verdicts with their rules and numbers, the tables, the paper-scale commands."""
  verdicts = judge(report)
  lines = ["# Results: the paper's claims at this scale", "",
           "Generated by `python -m inn_jax.report` from the runs' files (benchmarks/study.py "
           "runs the study and writes this file); every number below is read from a run's "
           "results.json, metrics.jsonl, config.json or analysis/report.json. Do not edit.", "",
           *_setup(report),
           "The measure: test BPC with a fresh state per window, mean over seeds (min, max). "
           f"Two numbers differ when their gap exceeds tol = max({TOL}, each row's seed spread).",
           "", "| claim | verdict | rule |", "|---|---|---|"]
  lines += [f"| {k} | **{v['verdict']}** | {v['rule']} |" for k, v in verdicts.items()]
  lines.append("")
  for k, v in verdicts.items():
    lines += [f"## {k}: {CLAIMS[k]}", "", f"Verdict: **{v['verdict']}**. Rule: {v['rule']}.", "",
              *v["lines"], ""]
  lines += ["## Tables and plots", "", tables_md, ""]
  if paper_commands:
    lines += ["## At the paper's scale", "", paper_commands.strip(), ""]
  lines += ["## Closing note", ""]
  lines += [f"- {k}: {v['verdict']}." for k, v in verdicts.items()]
  wall = report["wall_time_s"]
  lines.append(f"- Study wall time: {wall / 3600:.2f} h ({wall:,.0f} s, the sum of the "
               f"{len(report['unique_runs'])} trained runs' results.json wall_time_s)"
               + (f"; estimated beforehand {plan['estimate_s'] / 3600:.2f} h "
                  f"(plan.json)." if plan and "estimate_s" in plan else "."))
  return "\n".join(lines) + "\n"
