"""The paper's analyses of a trained INN, from a workdir: JSON, PNG plots and a Markdown report.

    python -m inn_jax.analyze --workdir W --split valid --out DIR [--max_tokens 65536]

Connectivity (Figure 3, A.3; inn_jax.connectivity) or, for communication "workspace", who writes
to which slot and who reads it, activation statistics, population coding and neuron diversity
(A.2, Figure 4; inn_jax.activations). Populations above 64 neurons are drawn aggregated (the
neuron axis in 64 blocks of consecutive neurons, their means; population coding 64 evenly
sampled neurons), each plot saying so; the JSON keeps the per-neuron shares and degrees. The model sows its neuron states and
attention weights (INN.capture) in the same forward pass that computes the logits; each batch is
reduced to sums inside one compiled function, so memory does not grow with the split.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from inn_jax import activations as act
from inn_jax import connectivity, data, stats
from inn_jax.models import INN, build_model

PLOT_NEURONS = 64  # Larger populations are drawn in this many blocks (or samples) of neurons.


class Loaded(NamedTuple):
  model: nnx.Module  # In eval mode.
  config: ml_collections.ConfigDict  # The run's config.json (workdir set to where it was found).
  corpus: Any  # inn_jax.data.Corpus, or None when not asked for.
  vocab: Any  # The run's own (vocab.json), else the corpus's.
  meta: dict  # The checkpoint's: step, tokens_seen, best_valid, ...


def load_for_analysis(workdir, *, best: bool = True, corpus: bool = True) -> Loaded:
  """The model of a training workdir (best checkpoint, else the newest: inn_jax.load, the
  parameters alone), its config and vocabulary, and (corpus=True) its corpus, which must have
  the run's vocabulary."""
  from inn_jax import restore
  from inn_jax.train import workdir as workdir_lib  # The run's records: the corpus check.
  model, vocab, config, step = restore.load_step(workdir, step="best" if best else "latest")
  loaded_corpus = None
  if corpus:
    loaded_corpus = data.load_corpus(config.data)
    workdir_lib.Workdir(workdir).check_vocab(loaded_corpus.vocab)
  return Loaded(model, config, loaded_corpus, vocab, {"step": step})


def encode_prompt(loaded: Loaded, text: str) -> np.ndarray:
  """Prompt ids, normalised as the training text was (text8: lower case a-z and space)."""
  if loaded.config.data.normalize == "text8":
    text = data.normalize_text8(text)
  ids = loaded.vocab.encode(text)
  if len(ids) == 0:
    raise ValueError("the prompt is empty after normalisation; give at least one symbol.")
  return np.asarray(ids, np.int32)


def _windows(tokens, seq_len: int, max_tokens: int) -> np.ndarray:
  n = min(len(tokens), max_tokens) if max_tokens else len(tokens)
  seq_len = min(seq_len, n)  # A split shorter than one window is one shorter window.
  if seq_len < 1:
    raise ValueError("the split is empty: nothing to analyse.")
  w = n // seq_len
  return np.asarray(tokens[:w * seq_len], np.int32).reshape(w, seq_len)


def _batch_stats(graphdef, state, x_BL, weight_B, reduce: str, code_len: int):
  model = nnx.merge(graphdef, state)
  _, sown = nnx.capture(model, nnx.Intermediate)(x_BL)
  weight_T = jnp.repeat(weight_B, x_BL.shape[1])  # Positions are batch-major: t = b * L + l.
  att, indeg, write, read, states = {}, {}, {}, {}, None
  for path, v in nnx.to_flat_state(sown):
    if path[-1] == "attention_THNN":  # Path ("layers", i, "comm", "attention_THNN").
      w_THNN = v.get_value()[0]
      att[path[1]] = connectivity.attention_sum(w_THNN, weight_T)
      # Each position's in-degrees: head-averaged weights summed over receivers, (T, N).
      indeg[path[1]] = w_THNN.astype(jnp.float32).mean(1).sum(1)
    elif path[-1] == "write_BLmHN":  # The workspace's: each slot's weights over the neurons.
      w_BLmHN = v.get_value()[0].astype(jnp.float32)
      write[path[1]] = jnp.einsum("b,blmhn->hmn", weight_B, w_BLmHN)
      m, n = w_BLmHN.shape[2], w_BLmHN.shape[-1]
      # Each position's write shares (T, N), scaled to sum to N like attention's in-degrees.
      indeg[path[1]] = (w_BLmHN.mean(3).sum(2) * (n / m)).reshape(-1, n)
    elif path[-1] == "read_BNLHm":
      read[path[1]] = jnp.einsum("b,bnlhm->hnm", weight_B, v.get_value()[0].astype(jnp.float32))
    elif path[-1] == "neurons_BNLD":  # One per layer, in order.
      states = v.get_value()
  out = {"attention": [att[i] for i in sorted(att)], "indegree": [indeg[i] for i in sorted(indeg)],
         "write": [write[i] for i in sorted(write)], "read": [read[i] for i in sorted(read)],
         "moments": [], "diversity": [], "code": []}
  for h_BNLD in states:
    a_BNL = act.neuron_activation(h_BNLD, reduce)
    out["moments"].append(act.moments(a_BNL, weight_B))
    out["diversity"].append(act.diversity_sums(h_BNLD, weight_B))
    out["code"].append(act.population_code(a_BNL, code_len))
  return out


_batch_stats_jit = jax.jit(_batch_stats, static_argnums=(0, 4, 5))


def analyze(model: INN, tokens, vocab=None, *, batch_size: int = 16, seq_len: int = 256,
            max_tokens: int = 65536, reduce: str = "mean", code_len: int = 64,
            edge_factor: float = connectivity.EDGE_FACTOR) -> dict:
  """Every figure of the analyses over `tokens` (its first max_tokens; 0 = all), as JSON data.

  The text is cut into windows of seq_len tokens, each starting from an empty state (a partial
  last window is dropped); the model runs in eval mode (no dropout).
  """
  if not isinstance(model, INN):
    raise ValueError(f"the analyses study an INN's neurons; this is a {type(model).__name__}.")
  if reduce not in act.REDUCTIONS:
    raise ValueError(f"reduce={reduce!r} is not one of {act.REDUCTIONS}.")
  if min(batch_size, seq_len, code_len) < 1 or max_tokens < 0 or edge_factor <= 0:
    raise ValueError(f"analyze: batch_size={batch_size}, seq_len={seq_len} and code_len="
                     f"{code_len} must be >= 1, max_tokens={max_tokens} >= 0 (0 = all), "
                     f"edge_factor={edge_factor} > 0.")
  windows_BL = _windows(np.asarray(tokens), seq_len, max_tokens)
  model = nnx.clone(model)
  model.eval()
  model.capture(True)
  graphdef, state = nnx.split(model)
  batch_size = min(batch_size, len(windows_BL))
  sums, moments, code, indegree = None, None, None, []
  for i in range(0, len(windows_BL), batch_size):
    x_BL = np.zeros((batch_size, windows_BL.shape[1]), np.int32)
    rows = windows_BL[i:i + batch_size]
    x_BL[:len(rows)] = rows  # A short last batch is padded with rows of weight 0.
    weight_B = (np.arange(batch_size) < len(rows)).astype(np.float32)
    s = jax.device_get(_batch_stats_jit(graphdef, state, x_BL, weight_B, reduce, code_len))
    new = jax.tree.map(lambda x: np.asarray(x, np.float64),
                       {k: s[k] for k in ("attention", "write", "read", "diversity")})
    sums = new if sums is None else jax.tree.map(np.add, sums, new)
    moments = [act.merge_moments(None if moments is None else moments[k], m)
               for k, m in enumerate(s["moments"])]
    code = np.asarray(s["code"]) if code is None else code
    # Positions of real rows only (batch-major: a padded row's positions come last).
    indegree.append([np.asarray(d)[:len(rows) * windows_BL.shape[1]] for d in s["indegree"]])
  positions = windows_BL.size
  text = vocab.decode(windows_BL[0, :code_len]) if vocab is not None else None
  conn = ({"skipped": "this INN has no attention between neurons (communication != attention)"}
          if not sums["attention"] else
          connectivity.summarize(np.stack(sums["attention"]) / positions, edge_factor=edge_factor))
  n = model.n_neurons
  if "skipped" not in conn and n > PLOT_NEURONS:  # N x N per layer and head: aggregated.
    a = conn.pop("mean_attention_LHNN")
    conn["mean_attention_blocks_LHNN"] = connectivity.blocks(
        connectivity.blocks(a, -1, PLOT_NEURONS), -2, PLOT_NEURONS).tolist()
    conn["block_size"] = n // PLOT_NEURONS
  space = ({"skipped": "this INN has no workspace (communication != workspace)"}
           if not sums["write"] else
           connectivity.workspace_summary(np.stack(sums["write"]) / positions,
                                          np.stack(sums["read"]) / positions,
                                          edge_factor=edge_factor))
  if "skipped" not in space and n > PLOT_NEURONS:
    space["mean_write_blocks_LHmN"] = connectivity.blocks(
        space.pop("mean_write_LHmN"), -1, PLOT_NEURONS).tolist()
    space["mean_read_blocks_LHNm"] = connectivity.blocks(
        space.pop("mean_read_LHNm"), -2, PLOT_NEURONS).tolist()
    space["block_size"] = n // PLOT_NEURONS
  return {
      "_indegree_TN": [np.concatenate(per_layer) for per_layer in zip(*indegree)],
      "tokens_analyzed": int(positions), "windows": len(windows_BL),
      "seq_len": int(windows_BL.shape[1]),
      "connectivity": conn, "workspace": space,
      "activations": {
          "definition": f"a = {reduce} over the D features of a neuron's state after each layer; "
                        f"sparsity = share of neuron-token pairs with |a| < {act.SPARSE_BELOW}",
          "layers": [{"layer": k, **act.activation_stats(m)} for k, m in enumerate(moments)],
      },
      "population_coding": {"layer": len(moments) - 1, "tokens": text,
                            "activations_NL": code.tolist()},
      "diversity": {
          "definition": "sum_n |h_n - mean_n h|^2 / sum_n |h_n|^2 over all positions, per layer",
          "layers": [act.diversity(b, t) for b, t in sums["diversity"]]},
  }


def neuron_roles(model: INN, init_model: INN, tokens, *, seq_len: int, max_tokens: int = 65536,
                 batch_size: int = 16, **options) -> dict:
  """Hubs and specialists of each layer against two nulls (inn_jax.stats.neuron_roles: the
  same analysis of `init_model`, the model at initialisation, and of `model` with its neurons
  shuffled per position), with bootstrap intervals over the analysis windows. `options` go to
  stats.neuron_roles (hub, specialist, quantile, level, bootstrap, shuffles, seed)."""
  kw = dict(batch_size=batch_size, seq_len=seq_len, max_tokens=max_tokens)
  trained = analyze(model, tokens, **kw)
  init = analyze(init_model, tokens, **kw)
  if not trained["_indegree_TN"]:
    return {"skipped": "this INN's neurons do not communicate by attention or a workspace"}
  return {"split_positions": trained["tokens_analyzed"], "window": trained["seq_len"],
          "layers": [stats.neuron_roles(d, d0, trained["seq_len"], **options)
                     for d, d0 in zip(trained["_indegree_TN"], init["_indegree_TN"])]}


def plot(report: dict, out: pathlib.Path) -> dict:
  """PNG figures of `report` in `out`; returns {figure: file name}."""
  from inn_jax.plots import pyplot
  plt = pyplot()
  from matplotlib.ticker import MaxNLocator
  files = {}

  def ints(ax, axes="xy"):  # Neuron and layer numbers are integers.
    for a in axes:
      getattr(ax, f"{a}axis").set_major_locator(MaxNLocator(integer=True))

  def save(fig, name):
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    files[name.removesuffix(".png")] = name

  conn = report["connectivity"]
  if "skipped" not in conn:
    block = conn.get("block_size")
    a_LHNN = np.asarray(conn["mean_attention_blocks_LHNN" if block else "mean_attention_LHNN"])
    unit = f"neuron block ({block} neurons, means)" if block else "neuron"
    n_layers, n_heads = a_LHNN.shape[:2]
    fig, axes = plt.subplots(n_layers, n_heads + 1, squeeze=False,
                             figsize=(2.4 * (n_heads + 1), 2.3 * n_layers))
    for l, row in enumerate(axes):
      for h, ax in enumerate(row):
        im = ax.imshow(a_LHNN[l, h] if h < n_heads else a_LHNN[l].mean(0), cmap="viridis")
        ax.set_title(f"layer {l} " + (f"head {h}" if h < n_heads else "mean"), fontsize=8)
        ax.set_xlabel(f"sender {unit}", fontsize=7)
        ax.set_ylabel(f"receiver {unit}", fontsize=7)
        ax.tick_params(labelsize=6)
        ints(ax)
        fig.colorbar(im, ax=ax, fraction=0.046)
    save(fig, "attention.png")
    fig, axes = plt.subplots(n_layers, 1, squeeze=False, figsize=(8, 1.8 * n_layers))
    for layer, ax in zip(conn["layers"], axes[:, 0]):
      deg = np.asarray(layer["in_degree"])
      colors = ["C3" if i in layer["hubs"] else "C2" if i in layer["specialists"] else "C0"
                for i in range(len(deg))]
      ax.bar(np.arange(len(deg)), deg, color=colors)
      ints(ax, "x")
      for factor in (conn["hub_factor"], conn["specialist_factor"]):
        ax.axhline(factor * deg.mean(), color="gray", ls="--", lw=0.8)
      ax.set_title(f"layer {layer['layer']}: in-degree (red hubs, green specialists), "
                   f"average degree {layer['average_degree']:.2f}", fontsize=8)
    save(fig, "in_degree.png")
  space = report.get("workspace", {"skipped": ""})
  if "skipped" not in space:
    block = space.get("block_size")
    w_LHmN = np.asarray(space["mean_write_blocks_LHmN" if block else "mean_write_LHmN"])
    r_LHNm = np.asarray(space["mean_read_blocks_LHNm" if block else "mean_read_LHNm"])
    unit = f"neuron block ({block} neurons, means)" if block else "neuron"
    n_layers = len(w_LHmN)
    fig, axes = plt.subplots(n_layers, 3, squeeze=False, figsize=(14, 2.4 * n_layers))
    for l, (ax_w, ax_r, ax_s) in enumerate(axes):
      im = ax_w.imshow(w_LHmN[l].mean(0), aspect="auto", cmap="viridis")
      ax_w.set_title(f"layer {l}: write w[slot, {unit}]", fontsize=8)
      fig.colorbar(im, ax=ax_w, fraction=0.046)
      im = ax_r.imshow(r_LHNm[l].mean(0).T, aspect="auto", cmap="viridis")
      ax_r.set_title(f"layer {l}: read r[{unit}, slot] (transposed)", fontsize=8)
      fig.colorbar(im, ax=ax_r, fraction=0.046)
      for ax in (ax_w, ax_r):
        ax.set_xlabel(unit, fontsize=7)
        ax.set_ylabel("slot", fontsize=7)
        ax.tick_params(labelsize=6)
        ints(ax)
      layer = space["layers"][l]
      share = np.sort(np.asarray(layer["write_share"]))[::-1]
      ax_s.plot(np.arange(len(share)), share, lw=1)
      for factor in (space["hub_factor"], space["specialist_factor"]):
        ax_s.axhline(factor, color="gray", ls="--", lw=0.8)
      ax_s.set_title(f"layer {l}: write share, neurons sorted (hubs {len(layer['hubs'])}, "
                     f"specialists {len(layer['specialists'])})", fontsize=8)
      ax_s.set_xlabel("neuron rank", fontsize=7)
      ints(ax_s, "x")
    save(fig, "workspace.png")
  layers = report["activations"]["layers"]
  fig, axes = plt.subplots(1, 3, figsize=(13, 0.5 * len(layers) + 1.8))
  for ax, key in zip(axes, ("mean", "variance", "sparsity")):
    im = ax.imshow(np.asarray([l[key] for l in layers]), aspect="auto", cmap="magma")
    ax.set_title(f"activation {key}", fontsize=9)
    ax.set_xlabel("neuron")
    ax.set_ylabel("layer")
    ints(ax)
    fig.colorbar(im, ax=ax)
  save(fig, "activations.png")
  pop = report["population_coding"]
  code_NL = np.asarray(pop["activations_NL"][pop["layer"]])
  sampled = code_NL.shape[0] > PLOT_NEURONS
  rows = np.linspace(0, code_NL.shape[0] - 1, PLOT_NEURONS).round().astype(int) if sampled else None
  code_NL = code_NL[rows] if sampled else code_NL
  fig, ax = plt.subplots(figsize=(max(6, 0.16 * code_NL.shape[1] + 2), 4))
  bound = float(np.abs(code_NL).max()) or 1.0
  im = ax.imshow(code_NL, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound)
  if pop["tokens"] is not None and len(pop["tokens"]) == code_NL.shape[1]:
    ax.set_xticks(np.arange(code_NL.shape[1]), list(pop["tokens"].replace(" ", "_")), fontsize=6)
  ax.set_xlabel("token")
  ax.set_ylabel(f"neuron ({PLOT_NEURONS} evenly sampled)" if sampled else "neuron")
  if sampled:
    ax.set_yticks(np.arange(0, PLOT_NEURONS, 8), rows[::8], fontsize=6)
  else:
    ints(ax, "y")
  ax.set_title(f"population coding, layer {pop['layer']}", fontsize=9)
  fig.colorbar(im, ax=ax)
  save(fig, "population_coding.png")
  fig, ax = plt.subplots(figsize=(5, 3))
  div = report["diversity"]["layers"]
  ax.bar(np.arange(len(div)), div)
  ax.set_xlabel("layer")
  ax.set_ylabel("neuron diversity")
  ints(ax, "x")
  save(fig, "diversity.png")
  return files


def markdown(report: dict) -> str:
  """A short report that states the figures and embeds the plots."""
  conn, acts, div = report["connectivity"], report["activations"], report["diversity"]
  lines = [f"# Neuron analysis: {report.get('workdir', '')}", "",
           f"Checkpoint step {report.get('step')}, split `{report.get('split')}`, "
           f"{report['tokens_analyzed']:,} tokens in {report['windows']} windows of "
           f"{report['seq_len']}; eval mode.", "", "## Connectivity (Figure 3, A.3)", ""]
  if "skipped" in conn:
    lines += [f"Skipped: {conn['skipped']}.", ""]
  else:
    lines += [f"Convention: {conn['convention']}. Hubs: in-degree >= {conn['hub_factor']} x mean; "
              f"specialists <= {conn['specialist_factor']} x mean; edges {conn['edge_threshold']}.",
              "", f"Attention uniform (every weight 1/N): **{conn['uniform']}** (max deviation "
              f"{conn['max_deviation_from_uniform']:.3g}). Over all layers: hubs "
              f"{conn['overall']['hubs']}, specialists {conn['overall']['specialists']}.", "",
              "| layer | hubs | specialists | average degree |", "|---|---|---|---|"]
    lines += [f"| {l['layer']} | {l['hubs']} | {l['specialists']} | {l['average_degree']:.2f} |"
              for l in conn["layers"]]
    lines += ["", "![attention](attention.png)", "", "![in-degree](in_degree.png)", ""]
  space = report.get("workspace", {"skipped": ""})
  if "skipped" not in space:
    lines += ["## The workspace: writers and readers of the slots", "",
              f"Convention: {space['convention']}. Hubs: write share >= {space['hub_factor']}; "
              f"specialists <= {space['specialist_factor']}; {space['edge_threshold']}. "
              f"{space['n_neurons']} neurons, {space['slots']} slots.", "",
              "| layer | hubs | specialists | writers per slot | readers per slot | "
              "max write deviation from uniform |", "|---|---|---|---|---|---|"]
    ids = lambda xs: (f"{xs}" if len(xs) <= 8 else f"{len(xs)} neurons")
    lines += [f"| {l['layer']} | {ids(l['hubs'])} | {ids(l['specialists'])} | "
              f"{min(l['writers_per_slot'])}-{max(l['writers_per_slot'])} | "
              f"{min(l['readers_per_slot'])}-{max(l['readers_per_slot'])} | "
              f"{l['max_write_deviation_from_uniform']:.3g} |" for l in space["layers"]]
    lines += ["", "![workspace](workspace.png)", ""]
  lines += ["## Activations (A.2) and population coding (Figure 4)", "", acts["definition"] + ".",
            "", "| layer | sparsity | highest mean | lowest mean | high variance |",
            "|---|---|---|---|---|"]
  lines += [f"| {l['layer']} | {l['sparsity_all']:.1%} | {l['highest_mean_neuron']} | "
            f"{l['lowest_mean_neuron']} | {l['high_variance_neurons']} |" for l in acts["layers"]]
  lines += ["", "![activations](activations.png)", "",
            f"Tokens: `{report['population_coding']['tokens']}`", "",
            "![population coding](population_coding.png)", "", "## Neuron diversity", "",
            div["definition"] + ": " + ", ".join(f"{d:.4g}" for d in div["layers"]) + ".", "",
            "![diversity](diversity.png)", ""]
  return "\n".join(lines)


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(prog="python -m inn_jax.analyze", description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True, help="a training workdir (config.json, checkpoints)")
  p.add_argument("--split", choices=("train", "valid", "test"), default="valid")
  p.add_argument("--out", required=True, help="folder for report.json, *.png and report.md")
  p.add_argument("--max_tokens", type=int, default=65536, help="0 = the whole split")
  p.add_argument("--batch_size", type=int, default=16)
  p.add_argument("--seq_len", type=int, default=0, help="0 = the run's data.seq_len")
  p.add_argument("--activation", choices=act.REDUCTIONS, default="mean")
  p.add_argument("--edge_factor", type=float, default=connectivity.EDGE_FACTOR,
                 help="an edge is a weight above edge_factor / N")
  p.add_argument("--checkpoint", choices=("best", "last"), default="best")
  p.add_argument("--null", action="store_true",
                 help="also hubs and specialists against two nulls (the model at "
                      "initialisation; neurons shuffled per position), with bootstrap intervals")
  p.add_argument("--hub", type=float, default=connectivity.HUB)
  p.add_argument("--specialist", type=float, default=connectivity.SPECIALIST)
  p.add_argument("--null_quantile", type=float, default=0.95)
  p.add_argument("--null_level", type=float, default=0.95, help="bootstrap interval level")
  p.add_argument("--null_bootstrap", type=int, default=1000)
  p.add_argument("--null_shuffles", type=int, default=200)
  args = p.parse_args(argv)
  if args.batch_size < 1 or args.max_tokens < 0 or args.seq_len < 0 or args.edge_factor <= 0:
    p.error("--batch_size must be >= 1, --max_tokens and --seq_len >= 0, --edge_factor > 0.")
  loaded = load_for_analysis(args.workdir, best=args.checkpoint == "best")
  report = analyze(loaded.model, getattr(loaded.corpus, args.split), loaded.vocab,
                   batch_size=args.batch_size, seq_len=args.seq_len or loaded.config.data.seq_len,
                   max_tokens=args.max_tokens, reduce=args.activation,
                   edge_factor=args.edge_factor)
  report.pop("_indegree_TN")
  if args.null:
    c = loaded.config
    init_model = build_model(c.model, loaded.vocab.size,
                             nnx.Rngs(params=c.seed, dropout=c.seed + 1))  # As the run began.
    report["roles"] = neuron_roles(
        loaded.model, init_model, getattr(loaded.corpus, args.split),
        seq_len=args.seq_len or c.data.seq_len, max_tokens=args.max_tokens,
        batch_size=args.batch_size, hub=args.hub, specialist=args.specialist,
        quantile=args.null_quantile, level=args.null_level, bootstrap=args.null_bootstrap,
        shuffles=args.null_shuffles)
  report = {"workdir": pathlib.Path(args.workdir).name, "split": args.split,
            "step": loaded.meta.get("step"), "checkpoint": args.checkpoint,
            "model": loaded.config.model.to_dict(), **report}
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  report["plots"] = plot(report, out)
  (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
  (out / "report.md").write_text(markdown(report))
  print(f"wrote {out / 'report.md'}, report.json and {len(report['plots'])} plots")
  return report


if __name__ == "__main__":
  try:
    main(sys.argv[1:])
  except (FileNotFoundError, ValueError) as e:  # Bad input: the message says the fix.
    sys.exit(f"error: {e}")
