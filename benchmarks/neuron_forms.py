"""The neuron-form table from benchmarks/results/neuron_forms/*.json (neuron_forms.sh).

    python benchmarks/neuron_forms.py benchmarks/results/neuron_forms

Writes table.md and summary.json there: per form, parameters, valid and test BPC (fresh state per
window) as mean ± sd over the seeds, the paired per-seed difference of test BPC from the default
form (none/full) with its 95% t-interval (inn_jax.stats, the studies' statistics: a difference
counts when the interval excludes 0 and it exceeds 0.02 BPC; two seeds give one degree of
freedom, so the intervals are wide), and the neuron diversity after training (the
between-neuron share of the last layer's variance; exactly 0 for copies).
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from inn_jax import stats  # noqa: E402

DEFAULT = "none-full"
MIN_EFFECT = 0.02


def main(folder):
  folder = pathlib.Path(folder)
  runs = {}
  for path in sorted(folder.glob("*-s[0-9].json")):
    r = json.loads(path.read_text())
    form, seed = path.stem.rsplit("-s", 1)
    runs.setdefault(form, {})[int(seed)] = r
  test = {form: {s: r["test_bpc"] for s, r in rs.items()} for form, rs in runs.items()}
  rows, summary = [], {}
  for form, rs in sorted(runs.items(), key=lambda kv: stats.summary(test[kv[0]].values())["mean"]):
    identity, params = form.split("-")
    v, t = (stats.summary(r[k] for r in rs.values()) for k in ("valid_bpc", "test_bpc"))
    d = None if form == DEFAULT else stats.paired(test[form], test[DEFAULT])
    reading = "the default" if d is None else {
        "greater": "worse", "less": "better", "tie": "tie"}[stats.difference(d, MIN_EFFECT)]
    div = stats.summary(r["diversity_layers"][-1] for r in rs.values())["mean"]
    summary[form] = {"neuron_identity": identity, "neuron_params": params,
                     "params": sorted({r["params"] for r in rs.values()}),
                     "valid_bpc": v, "test_bpc": t, "test_minus_default": d, "reading": reading,
                     "diversity_last": div}
    diff = "-" if d is None else f"{d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]"
    counts = ", ".join(f"{p:,}" for p in summary[form]["params"])
    rows.append(f"| `{identity}` | `{params}` | {counts} | {v['mean']:.4f} ± {v['sd']:.4f} | "
                f"{t['mean']:.4f} ± {t['sd']:.4f} | {diff} | {reading} | {div:.3f} |")
  table = ("| neuron_identity | neuron_params | parameters | valid BPC, mean ± sd | test BPC, "
           "mean ± sd | test - default (none/full) [95% interval] | reading | diversity, last "
           "layer |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
  (folder / "table.md").write_text(table)
  (folder / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
  print(table)


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/neuron_forms")
