"""What the report says beside a registered study's verdicts: corrections and caveats, computed
from the same records, where the rules' own sentences say more (or less) than the numbers.

A registered study's rules (inn_jax/claims.py, inn_jax/population_rules.py, inn_jax/stats.py)
are hashed at its first run, so their verdicts and the sentences they write stay as they are.
The report (inn_jax.studies) keeps every verdict's words as computed and adds, keyed by claim:

  short    a few words beside the verdict in the verdicts' table
  text     paragraphs under the claim's "Verdict: ... Rule: ..." line
  replace  {the start of one of the claim's lines: the line written correctly}
  tie      what a tie in the verdict means (None: the verdict names no tie)

  C1   the sentence naming the rates where one model fails and the other converges (the rules
       write "at lr none" for an empty list); where the claim holds, at which rates and on how
       many seeds, whether the failing runs diverged or learned too slowly, and both models'
       parameters
  C4   seeds that disagree: the rule's "does not hold" read as inconclusive, with what the
       failing seeds came closest to
  Q1   a sign that counts, and what else changes with N at fixed parameters (the model width,
       the per-neuron projections' share, the heads' width, training still under way)
  tie  a claim whose verdict or lines name a tie: no difference shown (with how many seeds),
       not an equivalence; no study registered an equivalence margin

Nothing here is said while a study's verdicts are withheld or pending. The headline's own
qualifications (the n-gram references by the study's rule, Holm's correction over its pairs)
are inn_jax.studies.findings', with holm_pairs below.
"""

from __future__ import annotations

import re

from inn_jax import claims, stats


def join(names) -> str:
  names = list(names)
  return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _rates(rates) -> str:
  return ", ".join(f"{x:g}" for x in rates)


def _seeds(n: int) -> str:
  return f"{n} seed{'s' if n != 1 else ''}"


def tie_words(n_seeds: int) -> str:
  """What a tie means: e.g. 'no difference shown (2 seeds: intervals with 1 degree of freedom;
  no equivalence margin registered), not an equivalence'."""
  df = n_seeds - 1
  return (f"no difference shown ({_seeds(n_seeds)}: intervals with {df} degree"
          f"{'s' if df != 1 else ''} of freedom; no equivalence margin registered), not an "
          "equivalence")


# ------------------------------------------------------------------------- Holm's correction

def holm_pairs(plan, recs, stage, models) -> dict:
  """{(a, b): {"d", "p", "p_holm", "counts"}} for each pair of `models` with two or more paired
  seeds: the paired difference a - b (claims.compare), its t-test's two-sided p-value, Holm's
  adjustment over all those pairs (inn_jax.verdicts.holm) and whether it counts by the rule."""
  from inn_jax import verdicts
  rules = plan["RULES"]
  found = {}
  for i, a in enumerate(models):
    for b in models[i + 1:]:
      d = claims.compare(plan, recs, stage, a, b)
      if d is not None and d["lo"] is not None:
        found[(a, b)] = d
  if not found:
    return {}
  per = {pair: [claims.measure(claims.at_best(recs, stage, m, rules), rules) for m in pair]
         for pair in found}
  # Only the t-test's p is read; paired_test asks for a margin for its TOST, unused here.
  p = {pair: verdicts.paired_test([a[s] - b[s] for s in found[pair]["seeds"]],
                                  rules["min_effect"], 1 - rules["level"]).p
       for pair, (a, b) in per.items()}
  adjusted = verdicts.holm(p, 1 - rules["level"]).adjusted
  return {pair: {"d": d, "p": p[pair], "p_holm": adjusted[pair],
                 "counts": stats.difference(d, rules["min_effect"]) in ("greater", "less")}
          for pair, d in found.items()}


# ------------------------------------------------------------------------------ per claim

def notes(rep: dict) -> dict:
  """{claim: {"short", "text", "replace", "tie"}} for the report of a built study
  (studies.build; claims with nothing to add left out); {} while its verdicts are withheld or
  pending."""
  if rep["changed"]:
    return {}
  plan, recs, out = rep["plan"], rep["records"], {}
  for k, v in rep["verdicts"].items():
    note = {"short": None, "text": [], "replace": {}, "tie": None}
    judge = {"C1": _c1, "C4": _c4, "Q1": _q1}.get(k)
    if judge is not None:
      judge(plan, recs, v, note)
    n = _tie_seeds(plan, recs, k)
    in_verdict = re.search(r"\btie\b", v["verdict"])
    if n and (in_verdict or any(re.search(r"\btie\b", line) for line in v["lines"])):
      note["text"].append(f"A tie here is {tie_words(n)}.")
      note["tie"] = tie_words(n) if in_verdict else None
    if note["short"] or note["text"] or note["replace"]:
      out[k] = note
  return out


def beside(note: dict | None) -> str:
  """The few words beside a verdict in the verdicts' table ("" without a note)."""
  if not note:
    return ""
  parts = [note["short"]] if note["short"] else []
  if note.get("tie"):
    parts.append("tie: no difference shown, not an equivalence")
  return "; ".join(parts)


def headline(found: dict) -> str:
  """One sentence of `found`'s (notes') qualifications for a headline that names verdicts."""
  parts = [f"{k} read with its caveat: {v['short']}." for k, v in found.items() if v["short"]]
  ties = {}
  for k, v in found.items():
    if v.get("tie"):
      ties.setdefault(v["tie"], []).append(k)
  parts += [f"In {join(ks)} a tie is {words}." for words, ks in ties.items()]
  return " ".join(parts)


def apply(lines: list[str], note: dict | None) -> list[str]:
  """A claim's lines with the note's replacements made."""
  if not note:
    return list(lines)
  out = []
  for line in lines:
    new = next((v for k, v in note["replace"].items() if line.startswith(k)), line)
    out.append(new)
  return out


C1_SENTENCE = "The Mamba stack fails where the INN converges at lr "


def _c1(plan, recs, v, note):
  holds, reverse = v.get("mamba_fails_inn_converges"), v.get("inn_fails_mamba_converges")
  if holds is None or reverse is None:
    return
  first = (f"The Mamba stack fails where the INN converges at lr {_rates(holds)}" if holds
           else "At no rate does the Mamba stack fail where the INN converges")
  second = (f"the INN fails where the Mamba stack converges at lr {_rates(reverse)}" if reverse
            else "at no rate does the INN fail where the Mamba stack converges")
  note["replace"][C1_SENTENCE] = f"{first}; {second}."
  if not holds:
    return
  r = plan["RULES"]["c1"]
  failing = [x for lr in holds for x in claims.runs(recs, r["stage"], r["mamba"], lr)]
  inn = claims.runs(recs, r["stage"], r["inn"])
  mamba = claims.runs(recs, r["stage"], r["mamba"])
  rates = sorted({x["lr"] for x in claims.runs(recs, r["stage"])})
  lowest = " (the lowest rate run)" if holds == rates[:len(holds)] else ""
  slow = bool(failing) and all(  # Finite, and its valid BPC still falling at the end.
      not x["diverged"] and x["test_bpc"] is not None and len(x["valid_curve"]) > 1
      and x["valid_curve"][-1][1] < x["valid_curve"][-2][1] for x in failing)
  text = f"Caveat: it holds only at lr {_rates(holds)}{lowest}, on {_seeds(len(failing))}"
  if slow:
    text += ("; there the Mamba stack's loss stays finite and its valid BPC is still falling at "
             "the last validation (" + "; ".join(
                 f"{x['valid_curve'][-2][1]:.4f} -> {x['valid_curve'][-1][1]:.4f}"
                 for x in failing) + "): it fails by learning too slowly, not by diverging")
  text += "."
  if inn and mamba and inn[0]["params"] and mamba[0]["params"]:
    a, b = inn[0]["params"], mamba[0]["params"]
    text += (f" The INN form has {a / b:.2f}x the Mamba stack's parameters ({a:,} against "
             f"{b:,}): not an equal-size comparison.")
  note["short"] = (f"only at lr {_rates(holds)}, on {_seeds(len(failing))}"
                   + ("; the Mamba stack learns slowly there, it does not diverge" if slow
                      else ""))
  note["text"].append(text)


def _c4(plan, recs, v, note):
  if v["verdict"] != "does not hold" or "c4" not in plan["RULES"]:
    return
  r = plan["RULES"]["c4"]
  has, missing = [], []
  for rec in sorted(claims.runs(recs, r["stage"], r["inn"]), key=lambda x: x["seed"]):
    layers = (rec.get("analysis") or {}).get("layers")
    if not layers:
      continue
    found = [claims.roles(layer, r) for layer in layers]
    hub, spec = any(h for h, _ in found), any(s for _, s in found)
    if hub and spec:
      has.append(rec["seed"])
      continue
    big = max(((layer["ratio"][m], layer["lo"][m], layer["hi"][m],
                layer["lo"][m] > layer["hub_threshold"])
               for layer in layers for m in range(len(layer["ratio"]))), key=lambda t: t[0])
    small = min(((layer["ratio"][m], layer["lo"][m], layer["hi"][m],
                  layer["hi"][m] < layer["specialist_threshold"])
                 for layer in layers for m in range(len(layer["ratio"]))), key=lambda t: t[0])
    parts = []
    if not hub:
      parts.append(f"its largest in-degree ratio is {big[0]:.3f} [{big[1]:.3f}, {big[2]:.3f}] "
                   f"against the hub factor {r['hub']}")
    if not spec:
      parts.append(f"its smallest {small[0]:.3f} [{small[1]:.3f}, {small[2]:.3f}] against "
                   f"{r['specialist']}")
    beyond = (hub or big[3]) and (spec or small[3])
    missing.append((rec["seed"], hub, spec, parts, beyond))
  if not has or not missing:
    return
  lacks = {(False, False): "neither", (True, False): "no specialist", (False, True): "no hub"}
  text = "; ".join(f"seed {s} has {lacks[(h, sp)]}: {', '.join(parts)}"
                   + (f", {'both ' if len(parts) > 1 else ''}beyond the nulls' thresholds: "
                      "only the rule's factors are missed" if beyond else "")
                   for s, h, sp, parts, beyond in missing)
  n = len(has) + len(missing)
  note["short"] = f"inconclusive: the {n} seeds disagree"
  note["text"].append(
      f"Caveat: the {n} seeds disagree: {join([f'seed {s}' for s in has])} "
      f"{'has' if len(has) == 1 else 'have'} both; {text}. With {n} seeds that disagree, "
      "read it as inconclusive: the rule's \"does not hold\" is not evidence that hubs and "
      "specialists do not emerge.")


def _tie_seeds(plan, recs, k) -> int | None:
  """The seeds behind a claim's ties (the largest count among the models it compares); None
  for a claim that reads no paired differences."""
  rules = plan["RULES"]
  spec = rules.get("population")
  if spec:
    stage, models = spec["stage"], [f"{kind}-n{n}" for kind in spec["kinds"] for n in spec["ns"]]
  elif k == "C3":
    stage, models = rules["c3"]["stage"], [rules["c3"][x] for x in ("inn", "none", "static")]
  else:
    return None
  n = max((len(claims.at_best(recs, stage, m, rules)) for m in models), default=0)
  return n or None


def _q1(plan, recs, v, note):
  """A population study's Q1: what changes with N besides N (plan and records)."""
  spec, rules = plan["RULES"].get("population"), plan["RULES"]
  if not spec or not re.search(r"\b(hurts|helps)\b", v["verdict"]):
    return
  ns, kinds = spec["ns"], spec["kinds"]
  low, high = ns[0], ns[-1]

  def key(kind, n, name, default=None):
    m = plan["MODELS"].get(f"{kind}-n{n}", {}).get("set", {})
    return m.get(f"model.{name}", plan["COMMON"].get(f"model.{name}", default))

  ds = [claims.compare(plan, recs, spec["stage"], f"{kind}-n{high}", f"{kind}-n{low}")
        for kind in kinds]
  ds = [d for d in ds if d is not None and d["lo"] is not None]
  if ds and min(d["lo"] for d in ds) > 0:
    bound = f"lower end is {min(d['lo'] for d in ds):+.4f} or above"
  elif ds and max(d["hi"] for d in ds) < 0:
    bound = f"upper end is {max(d['hi'] for d in ds):+.4f} or below"
  else:
    return
  sign = (f"Caveat: the sign is solid (every N={high} - N={low} interval's {bound}); its cause "
          f"is not established, since more than N changes from N={low} to N={high}:")
  widths = {n: sorted({key(kind, n, "d_model") for kind in kinds}) for n in ns}
  causes = []
  if widths[low] != widths[high]:
    causes.append(f"d_model is {'/'.join(map(str, widths[high]))} at N={high}, "
                  f"{'/'.join(map(str, widths[low]))} at N={low}")

  def share(n):
    out = []
    for kind in kinds:
      d, w = key(kind, n, "d_model"), key(kind, n, "neuron_width")
      found = claims.at_best(recs, spec["stage"], f"{kind}-n{n}", rules)
      params = next((x["params"] for x in found.values() if x["params"]), None)
      if d and w and params:  # neuron_in_DE and neuron_out_ED: N x d_model x d_neuron each.
        out.append(2 * n * d * w / params)
    return out

  hi_share, lo_share = share(high), share(low)
  if hi_share and lo_share:
    pct = lambda xs: (f"{min(xs):.0%}" if round(min(xs), 2) == round(max(xs), 2)
                      else f"{100 * min(xs):.0f}-{max(xs):.0%}")
    causes.append(f"the per-neuron projections in and out hold {pct(hi_share)} of the "
                  f"parameters at N={high} ({pct(lo_share)} at N={low})")
  heads = key(kinds[0], high, "n_heads")
  head_dim = key(kinds[0], high, "head_dim")
  talking = [kind for kind in kinds if kind != "none"]
  if heads and not head_dim and talking:
    width = lambda n: "/".join(map(str, sorted({key(kind, n, "neuron_width") // heads
                                                 for kind in talking})))
    owners = join([f"{kind}'s" for kind in talking])
    causes.append(f"{owners} {'single head scores' if heads == 1 else 'heads score'} with "
                  f"queries and keys as wide as the neuron: {width(high)} at N={high}, "
                  f"{width(low)} at N={low}")
  drops, tokens = [], set()
  for kind in kinds:
    for n in ns:
      for x in claims.at_best(recs, spec["stage"], f"{kind}-n{n}", rules).values():
        curve = [b for _, b in x["valid_curve"]]
        tokens.add(x["tokens"])
        drops.append(curve[-2] - curve[-1] if len(curve) > 1 else None)
  if drops and all(d is not None and d > 0 for d in drops) and len(tokens) == 1:
    causes.append(f"at {tokens.pop():,} tokens every model's valid BPC is still falling at its "
                  f"last validation (by {min(drops):.2f}-{max(drops):.2f} since the one "
                  "before): the comparison is of models still learning, and narrower neurons "
                  "may only learn more slowly")
  if not causes:
    return
  note["short"] = "its sign counts, its cause is not established"
  note["text"].append(f"{sign} {'; '.join(causes)}.")
