"""The model summary a run prints and keeps: parameters per module and matmul FLOPs per token.

    <workdir>/summary.json   {"params": {"total", "modules": {path: n}, "tensors": {path: shape}},
                              "flops_per_token": {"forward", "train"}, ...}
    <workdir>/summary.md     the same as a Markdown table

Module paths are the model's own attribute paths (embed, layers.0.memory, layers.0.comm,
final_norm, ...), grouped to a readable depth: a top-level module whole, and an item of a list of
layers split into its sub-modules (layers.0.memory, layers.0.comm) unless it holds parameters of
its own (a Mamba stack's or LSTM's layers.0). FLOPs: inn_jax.train.flops (matmuls and einsums of
the traced forward and train step, per token of one data.batch_size x data.seq_len batch).
`python -m inn_jax.summary` writes the same without training.
"""

from __future__ import annotations

import json
import pathlib

import jax

from inn_jax.train import flops, step

JSON_FILE = "summary.json"
MD_FILE = "summary.md"


def _name(path) -> str:
  return ".".join(str(p) for p in path)


def _leaves(params) -> list[tuple[tuple, object]]:
  """(path as names and indices, array) of every parameter; nnx's trailing `.value` dropped."""
  out = []
  for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
    keys = tuple(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path)
    out.append((keys[:-1] if keys and keys[-1] == "value" else keys, x))
  return out


def param_groups(params) -> dict[str, int]:
  """{module path: parameter count} of an nnx Param state (arrays or shapes)."""
  leaves = _leaves(params)
  # A list item (name, index) whose parameters all sit in sub-modules is split into them.
  items_with_own = {path[:2] for path, _ in leaves if len(path) == 3 and isinstance(path[1], int)}
  groups = {}
  for path, x in leaves:
    if len(path) > 2 and isinstance(path[1], int):
      key = path[:2] if path[:2] in items_with_own else path[:3]
    else:
      key = path[:1]
    groups[_name(key)] = groups.get(_name(key), 0) + int(x.size)
  return groups


def tensors(params) -> dict[str, list[int]]:
  """{parameter path: shape}."""
  return {_name(path): list(x.shape) for path, x in _leaves(params)}


def summarize(config, vocab_size: int, *, model=None, mesh=None, parts=None) -> dict:
  """The summary of `config`'s model (`model`, else built as the trainer builds it) for one
  data.batch_size x data.seq_len batch, traced (not run) under `mesh` (default: config.mesh).
  `parts`: the run's own step.TrainParts (then `model` and `mesh` are its)."""
  parts = parts or step.build(config, vocab_size, model=model, mesh=mesh)
  params = parts.params
  state = jax.eval_shape(parts.init_state)
  shape = parts.shape
  with jax.set_mesh(parts.mesh):  # The model's activation constraints read the mesh.
    per_token = flops.per_token(parts.forward, params, parts.make_step(1), state, shape)
  groups = param_groups(params)
  return {
      "config": config.name, "model": config.model.kind, "vocab_size": int(vocab_size),
      "batch_shape": list(shape),
      "params": {"total": sum(groups.values()), "modules": groups, "tensors": tensors(params)},
      "flops_per_token": per_token,
      "flops_counted": "2*M*N*K of every dot_general (matmuls, einsums) in the traced forward "
                       "and train step, scans times their length; not elementwise work (the "
                       "selective scan, convolutions, norms): inn_jax/train/flops.py",
  }


def markdown(summary: dict) -> str:
  p, f = summary["params"], summary["flops_per_token"]
  b, l = summary["batch_shape"]
  lines = [f"{summary['config']} ({summary['model']}, vocabulary {summary['vocab_size']})", "",
           "| module | parameters | share |", "| --- | ---: | ---: |"]
  lines += [f"| {path} | {n:,} | {100 * n / p['total']:.1f}% |"
            for path, n in p["modules"].items()]
  lines += [f"| **total** | **{p['total']:,}** | 100% |", "",
            f"Matmul FLOPs per token ({b} x {l} batch): forward {f['forward']:,.0f}, train step "
            f"{f['train']:,.0f} ({f['train'] / f['forward']:.2f} x forward)."
            if f["forward"] else "Matmul FLOPs per token: none counted.", ""]
  return "\n".join(lines)


def write(workdir, summary: dict):
  """summary.json and summary.md in `workdir` (process 0 only)."""
  if jax.process_index() != 0:
    return
  path = pathlib.Path(workdir)
  path.mkdir(parents=True, exist_ok=True)
  (path / JSON_FILE).write_text(json.dumps(summary, indent=2) + "\n")
  (path / MD_FILE).write_text(markdown(summary))
