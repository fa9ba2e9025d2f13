"""The rules of the study population-v1 (benchmarks/studies/population-v1/plan.py): what the
population size N buys, per way of communicating. Hashed at the study's registration: an edit
after its first run withholds its verdicts (inn_jax.studies), so a changed rule is a new study.

Each model is named "<kind>-n<N>" and judged at its own best rate (claims.at_best: seed 0's
valid BPC), by paired per-seed differences of test BPC (stats.paired) read with
stats.difference (counts when the 95% interval excludes 0 and |mean| > min_effect).

  Q1  per kind: does N help? kind-n<N> - kind-n4 for every larger N; "helps" when the
      largest N's difference counts below 0, "hurts" when it counts above, else a tie.
  Q2  per N: workspace - attention ("workspace better", "attention better" or a tie).
  Q3  per N: attention - none and workspace - none (communication helps, hurts, or a tie).
"""

from __future__ import annotations

from inn_jax import claims, stats

QUESTIONS = {
    "Q1": "A larger population (N from 4 to 256 at about 100k parameters) lowers test BPC.",
    "Q2": "The workspace (m slots, O(N m d) per token) does as well as dense attention "
          "(O(N^2 d)).",
    "Q3": "Communication (attention or workspace) beats none at equal parameters.",
}


def name(kind: str, n: int) -> str:
  return f"{kind}-n{n}"


def _diff(plan, records, a, b):
  r = plan["RULES"]
  d = claims.compare(plan, records, r["population"]["stage"], a, b)
  return d, stats.difference(d, r["min_effect"])


def table(plan, records) -> list[str]:
  """Test BPC at each model's best rate: N down, kinds across (mean ± sd (n))."""
  r = plan["RULES"]
  p = r["population"]
  lines = ["| N | " + " | ".join(p["kinds"]) + " |", "|---|" + "---|" * len(p["kinds"])]
  for n in p["ns"]:
    cells = [claims.cell(claims.at_best(records, p["stage"], name(k, n), r), r)
             for k in p["kinds"]]
    lines.append(f"| {n} | " + " | ".join(cells) + " |")
  return lines


def q1(plan, records) -> dict:
  p = plan["RULES"]["population"]
  lines, words = [], {}
  for kind in p["kinds"]:
    for n in p["ns"][1:]:
      d, word = _diff(plan, records, name(kind, n), name(kind, p["ns"][0]))
      lines.append(f"- {name(kind, n)} - {name(kind, p['ns'][0])}: {claims.interval(d)} "
                   f"({word})")
      words[kind] = word  # The largest N's reading, the last assigned.
  read = {"less": "helps", "greater": "hurts", "tie": "tie", "n/a": "not run"}
  verdict = "; ".join(f"{kind}: {read[w]}" for kind, w in words.items())
  return claims._verdict("Q1", verdict or "not run",
                         f"per kind, N={p['ns'][-1]} - N={p['ns'][0]} counts below 0", lines)


def q2(plan, records) -> dict:
  p = plan["RULES"]["population"]
  lines, out = [], []
  for n in p["ns"]:
    d, word = _diff(plan, records, name("workspace", n), name("attention", n))
    reading = {"less": "workspace better", "greater": "attention better", "tie": "tie",
               "n/a": "not run"}[word]
    lines.append(f"- N={n}: workspace - attention {claims.interval(d)} ({reading})")
    out.append(f"N={n} {reading}")
  return claims._verdict("Q2", "; ".join(out), "per N, workspace - attention", lines)


def q3(plan, records) -> dict:
  p = plan["RULES"]["population"]
  lines, out = [], []
  for n in p["ns"]:
    for kind in ("attention", "workspace"):
      d, word = _diff(plan, records, name(kind, n), name("none", n))
      reading = {"less": "helps", "greater": "hurts", "tie": "tie", "n/a": "not run"}[word]
      lines.append(f"- N={n}: {kind} - none {claims.interval(d)} ({reading})")
      out.append(f"N={n} {kind} {reading}")
  return claims._verdict("Q3", "; ".join(out), "per N, (attention or workspace) - none", lines)


def judge(plan, records, ngram) -> dict:
  """{"Q1", "Q2", "Q3": verdict dicts (claims._verdict's form)}."""
  del ngram  # The n-gram rows are the report's reference, not a rule here.
  return {"Q1": q1(plan, records), "Q2": q2(plan, records), "Q3": q3(plan, records)}


def findings(plan, records, ngram) -> list[str]:
  """The headline: the best model, then each question's reading, strongest differences first."""
  r = plan["RULES"]
  p = r["population"]
  rows = []
  for kind in p["kinds"]:
    for n in p["ns"]:
      s = stats.summary(claims.measure(claims.at_best(records, p["stage"], name(kind, n), r),
                                       r).values())
      if s is not None:
        rows.append((s["mean"], name(kind, n), s))
  if not rows:
    return ["No run of the population study has finished."]
  rows.sort()
  text = ["Test BPC at about 100k parameters and equal tokens, each model at its own best peak "
          "rate (mean over seeds): " + "; ".join(f"{m} {s['mean']:.4f} (n={s['n']})"
                                                 for _, m, s in rows) + "."]
  verdicts = judge(plan, records, ngram)
  text += [f"{k}: {v['verdict']}." for k, v in verdicts.items()]
  k = r["ngram_reference"]
  if k in ngram:
    beat = [m for mean, m, _ in rows if mean < ngram[k]["test_bpc"]]
    text.append(f"The Kneser-Ney {k}-gram scores {ngram[k]['test_bpc']:.4f}: "
                + (f"beaten by {', '.join(beat)}" if beat else "no model beats it") + ".")
  return [" ".join(text)]
