"""The neuron-form table from benchmarks/results/neuron_forms/*.json (neuron_forms.sh).

    python benchmarks/neuron_forms.py benchmarks/results/neuron_forms

Writes table.md and summary.json there: per form, parameters, tokens, valid/test BPC (fresh
state per window) for each seed and their mean, and the neuron diversity after training (the
between-neuron share of the first and last layer's variance; exactly 0 for copies).
"""

import json
import pathlib
import statistics
import sys


def main(folder):
  folder = pathlib.Path(folder)
  runs = {}
  for path in sorted(folder.glob("*-s[0-9].json")):
    r = json.loads(path.read_text())
    form = path.stem.rsplit("-s", 1)[0]
    runs.setdefault(form, []).append(r)
  rows, summary = [], {}
  for form, rs in sorted(runs.items(), key=lambda kv: statistics.mean(
      r["valid_bpc"] for r in kv[1])):
    identity, params = form.split("-")
    s = {"neuron_identity": identity, "neuron_params": params, "seeds": len(rs),
         "params": sorted({r["params"] for r in rs}), "tokens_seen": rs[0]["tokens_seen"],
         "valid_bpc": [r["valid_bpc"] for r in rs], "test_bpc": [r["test_bpc"] for r in rs],
         "diversity_first_last": [[r["diversity_layers"][0], r["diversity_layers"][-1]]
                                  for r in rs]}
    s["valid_bpc_mean"] = statistics.mean(s["valid_bpc"])
    s["test_bpc_mean"] = statistics.mean(s["test_bpc"])
    summary[form] = s
    div = statistics.mean(d[-1] for d in s["diversity_first_last"])
    rows.append(f"| `{identity}` | `{params}` | {', '.join(f'{p:,}' for p in s['params'])} | "
                f"{s['valid_bpc_mean']:.4f} ({', '.join(f'{v:.4f}' for v in s['valid_bpc'])}) | "
                f"{s['test_bpc_mean']:.4f} | {div:.3f} |")
  table = ("| neuron_identity | neuron_params | parameters | valid BPC, mean (seeds) | "
           "test BPC, mean | diversity, last layer |\n|---|---|---|---|---|---|\n"
           + "\n".join(rows) + "\n")
  (folder / "table.md").write_text(table)
  (folder / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
  print(table)


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/neuron_forms")
