"""Training workdirs -> Markdown tables and PNG plots: `python -m inn_jax.report`.

    python -m inn_jax.report W1 W2 ... --out DIR

Runs and studies. Each path given is a run workdir (it holds config.json), a study folder (its
subfolders holding config.json are its runs) or a folder of study folders. A run belongs to the
study named by the folder that holds it: <root>/<study>/<run>/. A run has config.json,
metrics.jsonl and results.json (train.py writes them), or, where train.py stopped on a
non-finite loss, diverged.json in place of results.json ({"diverged": true, "step": k,
"message": ...}, written by benchmarks/study.py). Optional: summary.json, and analysis/report.json
(`python -m inn_jax.analyze --out <run>/analysis`). A path that does not exist, a folder with no
run, or a run without results.json or diverged.json is an error: one line, exit status 2.

Rows. Runs of one study whose configs differ only in `seed` (and keys that cannot change the
results: inn_jax.train.workdir.NEUTRAL) are one row: each number is the mean over the seeds
with its (min, max). A row's name is the config's variant (the part of config.name after ":")
and the keys that vary among the study's rows of that variant (e.g. "mamba lr=0.01").
Rows of a study that differ only in optim.lr (their seeds grouped) form a learning-rate sweep.

Columns: model kind; form (INN: neuron_identity/neuron_params/communication, N neurons);
parameters; seeds; tokens seen; training FLOPs = per-token FLOPs x tokens seen, the per-token
count read from results.json["flops_per_token"] (a number or {"train": n}), else summary.json
["flops_per_token"]["train"], else computed here as inn_jax.bench counts a train step: 3 x the
dot_general FLOPs of the forward pass of the model of config.json on one data.seq_len window
(inn_jax.bench.matmul_flops), per token; wall and train seconds (results.json; a resumed run's
wall time is that of its last process); valid and test BPC with a fresh state per window
(results.json valid_bpc / test_bpc) and with the state carried (recurrent models).

Plots (PNG, per study): validation BPC (the periodic validation of metrics.jsonl, on the first
train.eval_windows windows) against tokens, training FLOPs and wall time (metrics.jsonl's
"time", made cumulative over resumes), one line per row, the seeds' min-max shaded; and, for a
learning-rate sweep, the training loss against the step, one panel per swept row.

Writes DIR/report.md, DIR/report.json (every number of the tables, and the per-seed values) and
DIR/<study>_*.png. A pre-registered study and its verdicts on the paper's claims are
inn_jax/studies.py's (python -m inn_jax.studies).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import statistics
import sys

RESULTS, DIVERGED, CONFIG, METRICS = "results.json", "diverged.json", "config.json", "metrics.jsonl"


class ReportError(ValueError):
  """Bad input: the message names the path and the fix."""


# ------------------------------------------------------------------------------------ reading

def _json(path: pathlib.Path):
  try:
    return json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise ReportError(f"{path}: cannot be read as JSON ({e}); rerun the run or remove it.")


def _metrics(path: pathlib.Path) -> list[dict]:
  rows = []
  for line in path.read_text().splitlines() if path.is_file() else []:
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:  # A torn last line of a killed run.
      continue
  return rows


def find_runs(paths) -> list[pathlib.Path]:
  """Run folders under `paths` (a run, a study folder, or a folder of study folders)."""
  runs = []
  for p in map(pathlib.Path, paths):
    if not p.exists():
      raise ReportError(f"{p}: no such workdir; give run workdirs (holding {CONFIG}) or folders "
                        "of them.")
    for depth in range(3):
      found = sorted(q.parent for q in p.glob("/".join(["*"] * depth + [CONFIG])))
      if found:
        runs += found
        break
    else:
      raise ReportError(f"{p}: no {CONFIG} in it or in its subfolders (two levels); a run "
                        f"workdir is where train.py wrote {CONFIG}.")
  return list(dict.fromkeys(runs))


def load_run(path: pathlib.Path) -> dict:
  """A run's records: config (as saved, without "resolved"), results or diverged, metrics."""
  from inn_jax.train import workdir as workdir_lib
  config = _json(path / CONFIG)
  vocab_size = config.pop("vocab_size", None)
  config.pop("resolved", None)
  results = _json(path / RESULTS) if (path / RESULTS).is_file() else None
  diverged = _json(path / DIVERGED) if (path / DIVERGED).is_file() else None
  if results is None and diverged is None:
    raise ReportError(f"{path}: no {RESULTS} (the run has not finished); finish it (run its "
                      f"train.py command again) or leave {path} out.")
  summary = _json(path / "summary.json") if (path / "summary.json").is_file() else {}
  analysis = path / "analysis" / "report.json"
  flat = workdir_lib.flatten(config)
  return {"path": path, "study": path.parent.name, "name": path.name, "config": config,
          "flat": flat, "vocab_size": vocab_size, "results": results, "diverged": diverged,
          "summary": summary, "metrics": _metrics(path / METRICS),
          "analysis": _json(analysis) if analysis.is_file() else None}


# ------------------------------------------------------------------------------------- FLOPs

@functools.lru_cache(maxsize=None)
def _computed_fpt(model_json: str, vocab_size: int, seq_len: int) -> float:
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from inn_jax.bench import matmul_flops
  from inn_jax.models import build_model
  model = nnx.eval_shape(lambda: build_model(json.loads(model_json), vocab_size,
                                             nnx.Rngs(params=0, dropout=1)))
  model.eval()
  graphdef, state = nnx.split(model)
  x_BL = jax.ShapeDtypeStruct((1, seq_len), jnp.int32)
  jaxpr = jax.make_jaxpr(lambda s, t: nnx.merge(graphdef, s)(t))(state, x_BL).jaxpr
  return 3.0 * matmul_flops(jaxpr) / seq_len


def flops_per_token(config: dict, vocab_size: int) -> float:
  """Training FLOPs per token of `config` (a config as config.json holds it), as inn_jax.bench
  counts a train step: 3 x the forward pass's dot_general FLOPs on one window, per token."""
  model = {k: v for k, v in config["model"].items()}
  return _computed_fpt(json.dumps(model, sort_keys=True), int(vocab_size),
                       int(config["data"]["seq_len"]))


def run_fpt(run: dict) -> tuple[float | None, str]:
  """(training FLOPs per token, where it was read)."""
  got = (run["results"] or {}).get("flops_per_token")
  if isinstance(got, dict):
    got = got.get("train")
  if isinstance(got, (int, float)):
    return float(got), RESULTS
  got = (run["summary"].get("flops_per_token") or {})
  if isinstance(got, dict) and isinstance(got.get("train"), (int, float)):
    return float(got["train"]), "summary.json"
  if run["vocab_size"] is None:
    return None, "n/a"
  try:
    return flops_per_token(run["config"], run["vocab_size"]), "computed"
  except (ValueError, TypeError, KeyError):  # A model this version cannot build: n/a.
    return None, "n/a"


# -------------------------------------------------------------------------------------- rows

def group_key(run: dict) -> str:
  from inn_jax.train import workdir as workdir_lib
  return json.dumps({k: v for k, v in sorted(run["flat"].items())
                     if k != "seed" and not workdir_lib.is_neutral(k)}, sort_keys=True,
                    default=str)


def variant(run: dict) -> str:
  return str(run["config"].get("name", "")).rpartition(":")[2] or run["config"]["model"]["kind"]


def form(config: dict) -> str:
  m = config["model"]
  if m["kind"] != "inn":
    return "-"
  return (f"{m['neuron_identity']}/{m['neuron_params']}/{m['communication']}, "
          f"N={m['n_neurons']}")


def stats(values) -> dict | None:
  values = [v for v in values if v is not None]
  if not values:
    return None
  return {"mean": statistics.mean(values), "min": min(values), "max": max(values),
          "values": values}


def _score(results, split: str, mode: str):
  s = results["scores"].get(split, {}).get(mode) if results else None
  return s.get("bpc") if s else None


def make_row(runs: list[dict]) -> dict:
  """One row from the seeds of one config."""
  runs = sorted(runs, key=lambda r: r["config"]["seed"])
  first = runs[0]
  done = [r for r in runs if r["results"]]
  fpt, source = run_fpt(first)
  d = first["config"]["data"]

  def per_seed(fn):
    return stats([fn(r) for r in done])

  tokens = [r["results"]["tokens_seen"] for r in done]
  row = {
      "variant": variant(first), "model": first["config"]["model"]["kind"],
      "form": form(first["config"]), "seeds": [r["config"]["seed"] for r in runs],
      "runs": [str(r["path"]) for r in runs],
      "params": sorted({r["results"]["params"] for r in done}),
      "diverged": [{"seed": r["config"]["seed"], "step": r["diverged"].get("step")}
                   for r in runs if r["diverged"]],
      "tokens_seen": stats(tokens), "flops_per_token": fpt, "flops_source": source,
      "train_flops": stats([fpt * t for t in tokens]) if fpt else None,
      "wall_time_s": per_seed(lambda r: r["results"]["wall_time_s"]),
      "train_time_s": per_seed(lambda r: r["results"]["train_time_s"]),
      "lr": first["config"]["optim"]["lr"], "steps": first["config"]["train"]["steps"],
      "batch_tokens": d["batch_size"] * d["seq_len"],
      "key": group_key(first),
  }
  for split in ("valid", "test"):
    for mode, name in (("reset", "fresh"), ("carried", "carried")):
      row[f"{split}_bpc_{name}"] = per_seed(lambda r, s=split, m=mode: _score(r["results"], s, m))
  row["analysis"] = [{"seed": r["config"]["seed"], **_c4(r["analysis"])}
                     for r in runs if r["analysis"]]
  return row


def _c4(report: dict) -> dict:
  conn = report.get("connectivity", {})
  if "skipped" in conn:
    return {"skipped": conn["skipped"]}
  return {"uniform": conn.get("uniform"),
          "layers": [{k: l[k] for k in ("layer", "hubs", "specialists", "average_degree")}
                     for l in conn.get("layers", [])],
          "edge_threshold": conn.get("edge_threshold")}


def _label_rows(rows: list[dict]):
  """Names each row: its variant, and the keys that vary among the study's rows of it."""
  for row in rows:
    same = [r for r in rows if r["variant"] == row["variant"]]
    flats = [json.loads(r["key"]) for r in same]
    varying = sorted(k for k in set().union(*flats)
                     if len({json.dumps(f.get(k), default=str) for f in flats}) > 1)
    mine = json.loads(row["key"])
    extra = [f"{k.rpartition('.')[2]}={mine.get(k)}" for k in varying if k != "name"]
    row["name"] = " ".join([row["variant"], *extra])


def lr_sweeps(rows: list[dict]) -> list[list[dict]]:
  """Groups of rows (two or more) that differ only in optim.lr."""
  groups = {}
  for row in rows:
    key = {k: v for k, v in json.loads(row["key"]).items() if k != "optim.lr"}
    groups.setdefault(json.dumps(key, sort_keys=True), []).append(row)
  return [sorted(g, key=lambda r: r["lr"]) for g in groups.values()
          if len({r["lr"] for r in g}) > 1]


def build(paths) -> dict:
  """{"studies": {study: {"rows": [...], "sweeps": [[row names]]}}, "runs": [...]}."""
  runs = [load_run(p) for p in find_runs(paths)]
  studies = {}
  for run in runs:
    studies.setdefault(run["study"], {}).setdefault(group_key(run), []).append(run)
  out = {"studies": {}, "unique_runs": {}}
  for study, groups in sorted(studies.items()):
    rows = [make_row(g) for g in groups.values()]
    _label_rows(rows)
    rows.sort(key=lambda r: r["name"])
    out["studies"][study] = {"rows": rows,
                             "sweeps": [[r["name"] for r in s] for s in lr_sweeps(rows)]}
  for run in runs:  # A run the study shares between studies is counted once (its workdir).
    if run["results"]:
      out["unique_runs"][run["results"].get("workdir") or str(run["path"])] = {
          "wall_time_s": run["results"]["wall_time_s"],
          "train_time_s": run["results"]["train_time_s"]}
  out["wall_time_s"] = sum(r["wall_time_s"] for r in out["unique_runs"].values())
  out["_runs"] = runs
  return out


# -------------------------------------------------------------------------------- formatting

def fmt(s: dict | None, digits: int = 4, spread: bool = True) -> str:
  if s is None:
    return "-"
  one = lambda v: f"{v:.{digits}f}"
  if len(s["values"]) == 1 or not spread:
    return one(s["mean"])
  return f"{one(s['mean'])} ({one(s['min'])}, {one(s['max'])})"


def fmt_count(s: dict | None) -> str:
  if s is None:
    return "-"
  if s["min"] == s["max"]:
    return f"{s['mean']:,.0f}"
  return f"{s['mean']:,.0f} ({s['min']:,.0f}, {s['max']:,.0f})"


def fmt_flops(s: dict | None) -> str:
  if s is None:
    return "n/a"
  return f"{s['mean']:.3g}" if s["min"] == s["max"] else f"{s['mean']:.3g} ({s['min']:.3g}, " \
      f"{s['max']:.3g})"


def seeds_cell(row: dict) -> str:
  text = str(len(row["seeds"]))
  if row["diverged"]:
    text += f" ({len(row['diverged'])} diverged at step " + ", ".join(
        str(d["step"]) for d in row["diverged"]) + ")"
  return text


HEADER = ["run", "model", "form", "params", "seeds", "tokens", "train FLOPs", "wall s (train s)",
          "valid BPC fresh", "valid carried", "test BPC fresh", "test carried"]


def table(rows: list[dict]) -> list[str]:
  lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
  for r in rows:
    cells = [r["name"], r["model"], r["form"], ", ".join(f"{p:,}" for p in r["params"]) or "-",
             seeds_cell(r), fmt_count(r["tokens_seen"]), fmt_flops(r["train_flops"]),
             f"{fmt(r['wall_time_s'], 0, False)} ({fmt(r['train_time_s'], 0, False)})",
             fmt(r["valid_bpc_fresh"]), fmt(r["valid_bpc_carried"]), fmt(r["test_bpc_fresh"]),
             fmt(r["test_bpc_carried"])]
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def markdown(report: dict, out: pathlib.Path, base: pathlib.Path) -> str:
  """The tables and plots; image paths relative to `base` (the Markdown file's folder)."""
  lines = ["Numbers: mean over seeds (min, max); BPC on the whole split from the best "
           "checkpoint, fresh = a fresh state per window, carried = the state carried across "
           "windows. Training FLOPs: per-token FLOPs (" + _sources(report) + ") x tokens seen.",
           ""]
  for study, s in report["studies"].items():
    lines += [f"### {study}", "", *table(s["rows"]), ""]
    for png in s.get("plots", []):
      lines += [f"![{study}]({os.path.relpath(out / png, base)})", ""]
  return "\n".join(lines)


def _sources(report: dict) -> str:
  found = sorted({r["flops_source"] for s in report["studies"].values() for r in s["rows"]})
  return ", ".join(found) or "n/a"


# ------------------------------------------------------------------------------------- plots

def _curves(run: dict, fpt):
  """(tokens, flops, cumulative wall s, valid bpc) of a run's periodic validations."""
  d = run["config"]["data"]
  per_step = d["batch_size"] * d["seq_len"]
  offset, last, wall = 0.0, 0.0, {}
  for row in run["metrics"]:  # "time" restarts at 0 in a resumed process.
    if row["time"] < last:
      offset += last
    last = row["time"]
    wall[(row["step"], row["split"])] = offset + row["time"]
  valid = [r for r in run["metrics"] if r["split"] == "valid" and "bpc" in r]
  steps = [r["step"] for r in valid]
  return {"step": steps, "tokens": [s * per_step for s in steps],
          "flops": [s * per_step * fpt for s in steps] if fpt else None,
          "wall": [wall[(s, "valid")] for s in steps], "bpc": [r["bpc"] for r in valid]}


def _band(series: list[dict], x: str):
  """Mean line and min-max band of the seeds at the validation steps all of them have."""
  steps = sorted(set.intersection(*(set(s["step"]) for s in series)))
  at = [{st: i for i, st in enumerate(s["step"])} for s in series]
  xs = [statistics.mean(s[x][a[st]] for s, a in zip(series, at)) for st in steps]
  ys = [[s["bpc"][a[st]] for s, a in zip(series, at)] for st in steps]
  return xs, [statistics.mean(y) for y in ys], [min(y) for y in ys], [max(y) for y in ys]


def plot(report: dict, out: pathlib.Path):
  """Writes each study's PNGs into `out`; records their names in report["studies"][s]["plots"]."""
  from inn_jax.plots import pyplot
  plt = pyplot()
  import matplotlib.ticker  # noqa: F401 (matplotlib.ticker below)
  runs_by_path = {str(r["path"]): r for r in report["_runs"]}
  for study, s in report["studies"].items():
    s["plots"] = []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, x, label in zip(axes, ("tokens", "flops", "wall"),
                            ("tokens seen", "training FLOPs", "wall time (s)")):
      for i, row in enumerate(s["rows"]):
        series = [_curves(runs_by_path[p], row["flops_per_token"]) for p in row["runs"]]
        series = [c for c in series if c["step"] and c[x] is not None]
        if not series:
          continue
        xs, mean, lo, hi = _band(series, x)
        ax.plot(xs, mean, color=f"C{i % 10}", label=row["name"], marker=".", ms=3)
        if len(series) > 1:
          ax.fill_between(xs, lo, hi, color=f"C{i % 10}", alpha=0.2)
      ax.set_xlabel(label)
      ax.set_ylabel("validation BPC (periodic)")
      if x != "wall":
        ax.set_xscale("log")
        # 1-2-5 ticks as 200k, 1M, 5T: the default minor labels overlap.
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.EngFormatter(sep=""))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
      ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{study}: validation BPC", fontsize=10)
    fig.tight_layout()
    name = f"{study}_valid_bpc.png"
    fig.savefig(out / name, dpi=100)
    plt.close(fig)
    s["plots"].append(name)
    sweeps = lr_sweeps(s["rows"])
    if sweeps:
      fig, axes = plt.subplots(1, len(sweeps), figsize=(6 * len(sweeps), 4.2), squeeze=False)
      for ax, sweep in zip(axes[0], sweeps):
        for i, row in enumerate(sweep):
          for j, path in enumerate(row["runs"]):
            train = [m for m in runs_by_path[path]["metrics"] if m["split"] == "train"]
            ax.plot([m["step"] for m in train], [m["loss"] for m in train], color=f"C{i % 10}",
                    lw=1, label=f"lr={row['lr']:g}" if j == 0 else None)
        ax.set_title(sweep[0]["variant"] + ": training loss", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (nats)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
      fig.tight_layout()
      name = f"{study}_lr_sweep.png"
      fig.savefig(out / name, dpi=100)
      plt.close(fig)
      s["plots"].append(name)


# -------------------------------------------------------------------------------------- main

def public(report: dict) -> dict:
  """report without the loaded runs (JSON)."""
  return {k: v for k, v in report.items() if not k.startswith("_")}


def write(paths, out) -> dict:
  out = pathlib.Path(out)
  report = build(paths)
  out.mkdir(parents=True, exist_ok=True)
  plot(report, out)
  (out / "report.md").write_text("# Report\n\n" + markdown(report, out, out) + "\n")
  (out / "report.json").write_text(json.dumps(public(report), indent=1, default=str) + "\n")
  return report


def _main(argv):
  p = argparse.ArgumentParser(prog="python -m inn_jax.report", description=__doc__.split("\n")[0])
  p.add_argument("workdirs", nargs="+", help="run workdirs, study folders or a folder of them")
  p.add_argument("--out", required=True, help="folder for report.md, report.json and the PNGs")
  args = p.parse_args(argv)
  report = write(args.workdirs, args.out)
  n = sum(len(s["rows"]) for s in report["studies"].values())
  print(f"wrote {pathlib.Path(args.out) / 'report.md'}: {len(report['studies'])} studies, {n} "
        "rows")
  return report


def main(argv=None):
  """The command line; bad input is one line on stderr and exit status 2."""
  try:
    return _main(sys.argv[1:] if argv is None else argv)
  except ReportError as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
