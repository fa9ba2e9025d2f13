"""Experiment configs: the shared base, loading `path.py[:variant]`, command-line overrides.

A config file in configs/ defines `get_config(variant=None)` and builds on `base_config()`.
Overrides are `--config.a.b=value`; a key the config does not have is an error, as in
ml_collections' config_flags.
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib

import ml_collections

from inn_jax import data, models
from inn_jax.models import model_config

MODES = ("train", "eval")


def base_config(name: str, model: ml_collections.ConfigDict, dataset: str, **data_overrides):
  """Every key a run reads, with defaults; config files change only what they need.

  `name` goes to results.json, `model` is a model config, `dataset` and `data_overrides` fill
  config.data.
  """
  c = ml_collections.ConfigDict()
  c.name = name  # Config name written to results.json.
  c.mode = "train"  # "train" (resumes if the workdir has checkpoints) | "eval" (best checkpoint).
  c.workdir = f"workdirs/{name.replace(':', '-')}"
  c.seed = 0  # Parameters use seed, dropout seed + 1 folded with the step.
  c.model = model
  c.data = data.default_data_config()
  c.data.update(dict(name=dataset, **data_overrides))
  c.optim = ml_collections.ConfigDict(dict(
      lr=4e-4,  # Peak learning rate of the one-cycle schedule.
      schedule="one_cycle",  # "one_cycle" (PyTorch OneCycleLR defaults) | "constant".
      pct_start=0.3, div_factor=25.0, final_div_factor=1e4,
      cycle_momentum=True,  # PyTorch's default: beta1 goes max_momentum -> base -> max.
      base_momentum=0.85, max_momentum=0.95,
      b1=0.9, b2=0.999, eps=1e-8,  # b1 is used when cycle_momentum is False.
      weight_decay=0.01,  # PyTorch AdamW's default.
      decay_mask="matrices",  # "matrices": not norms, biases, embeddings | "all" (PyTorch).
      clip_norm=1.0,  # Global-norm gradient clipping; 0 turns it off.
  ))
  c.train = ml_collections.ConfigDict(dict(
      steps=10_000, log_every=100, eval_every=1000, save_every=1000,
      stop_at=0,  # > 0: save and exit at this step (a job-time limit); rerun to resume.
      keep=3,  # Last checkpoints kept; the best one by validation is kept apart.
      eval_windows=0,  # Windows of the valid split for periodic evaluation; 0 = all of it.
      async_save=True,
      # > 1: accumulate gradients over this many slices of each batch (the same update, a
      # K-th of the activation memory); 0: the fewest (1, 2, 4, ...) that fit the device.
      microbatches=1,
      # Resume even though keys that change the results differ from the saved config; the
      # changes are recorded in the workdir's config_history.jsonl (see inn_jax/train/workdir.py).
      allow_changes=False,
      # "START:END": a jax.profiler trace of steps START to END - 1 in <workdir>/profile (see
      # inn_jax/train/profile.py; TensorBoard's profile plugin or XProf); "" for none.
      profile_steps="",
  ))
  c.eval = ml_collections.ConfigDict(dict(
      splits=("valid", "test"),
      carry_state="auto",  # "auto": both ways for recurrent models | "yes" | "no".
      microbatches=0,  # Slices of each eval batch in its step; 0: the fewest that fit. Same result.
  ))
  c.mesh = ml_collections.ConfigDict(dict(data=-1, neuron=1))  # -1: all remaining devices.
  c.distributed = ml_collections.ConfigDict(dict(
      enabled=False, coordinator_address="", num_processes=0, process_id=-1,
      local_device_ids="",  # Comma-separated ids, or "" for all; see README (several hosts).
  ))
  c.log = ml_collections.ConfigDict(dict(
      tensorboard=True,  # <workdir>/tb: scalars, and the config with the final metrics (HParams).
      progress=True,
      # Weights & Biases (pip install -e ".[wandb]"): the same scalars, the config and the final
      # metrics; WANDB_MODE=offline keeps it on the machine. A resumed run continues the run id
      # kept in <workdir>/wandb_run.json. Empty entity / name: W&B's default / config.name.
      wandb=False, wandb_project="inn_jax", wandb_entity="", wandb_name="",
  ))
  # XLA options for every compiled step, e.g. {"xla_backend_optimization_level": 0}: faster
  # CPU compiles for smoke tests.
  c.compiler_options = ml_collections.ConfigDict()
  return c


def paper_model(kind: str, paper: bool, **overrides) -> ml_collections.ConfigDict:
  """`kind`'s model config in the paper-code form (paper=True) or ours, then `overrides`.

  Paper code: a head tied to an N(0, 1) embedding and, for the INN, one shared memory and
  neurons with no identity (they stay copies of each other). Ours: the model defaults (scaled
  embedding, untied head for the INN and Mamba stack, each neuron its own memory).
  """
  cfg = model_config(kind, **overrides)
  if paper:
    for key, value in (("embed_init", "normal"), ("tie_embeddings", True),
                       ("neuron_identity", "none"), ("neuron_params", "shared")):
      if key in cfg and key not in overrides:
        cfg[key] = value
  return cfg


def shipped() -> dict[str, pathlib.Path]:
  """{name: file} of the experiment configs in the package (inn_jax/configs)."""
  from inn_jax import configs
  folder = pathlib.Path(configs.__file__).parent
  return {p.stem: p for p in sorted(folder.glob("*.py")) if not p.stem.startswith("_")}


def load(spec: str) -> ml_collections.ConfigDict:
  """Loads `name`, `path.py` or either with `:variant`, and calls its get_config(variant); a
  name is a config shipped in the package (inn_jax/configs: quickstart, text8, ...)."""
  path, _, variant = spec.partition(":")
  file = pathlib.Path(path)
  if not file.is_file() and "/" not in path and not path.endswith(".py"):
    file = shipped().get(path, file)
  if not file.is_file():
    raise FileNotFoundError(f"--config {path}: no such config file or shipped config; give a "
                            f"path or one of {sorted(shipped())}.")
  module_spec = importlib.util.spec_from_file_location(f"_inn_config_{file.stem}", file)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"{path} defines no get_config(variant=None).")
  config = module.get_config(variant or None)
  config.lock()  # Unknown keys now fail on assignment too.
  return config


def _parse(text: str, current, kind=None):
  """`text` as the type of `current` (or of the placeholder's declared `kind`)."""
  if current is None and kind in (bool, int, float, str):
    if text.lower() in ("none", "null"):
      return None
    current = kind()
  if isinstance(current, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise ValueError(f"expected true/false, got {text!r}")
  if isinstance(current, int):
    return int(text)
  if isinstance(current, float):
    return float(text)
  if isinstance(current, str):
    return text
  if isinstance(current, (tuple, list)):  # "0.8,0.1,0.1" or "(0.8, 0.1, 0.1)".
    items = [x.strip() for x in text.strip().strip("()[]").split(",") if x.strip()]
    # Each item as the type of the current items: data.split stays numbers, eval.splits names.
    kinds = {type(x) for x in current}
    item = current[0] if len(kinds) == 1 and not isinstance(current[0], (tuple, list)) else None
    return tuple(_parse(x, item) for x in items)
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _parse_typed(text: str, annotation, current):
  """A model option as its typed config field allows: an int where it admits ints (dt_rank
  "8" -> 8, "auto" stays), a float, a bool, None, else the text; the typed config checks it."""
  import typing
  if annotation is None:
    return _parse(text, current)
  args = set(typing.get_args(annotation)) | {annotation}
  flat_args = set()
  for a in args:
    flat_args |= set(typing.get_args(a)) | {a}
  if text.lower() in ("none", "null") and type(None) in flat_args:
    return None
  if bool in flat_args and text.lower() in ("true", "false", "1", "0", "yes", "no"):
    return text.lower() in ("true", "1", "yes")
  for kind in (int, float):
    if kind in flat_args:
      try:
        return kind(text)
      except ValueError:
        pass
  return text


def override(config: ml_collections.ConfigDict, key: str, text: str):
  """Sets `config.<key>` (dotted) from the string `text`, typed like the current value."""
  parts = key.split(".")
  node = config
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      here = ".".join(["config", *parts[:i]])
      valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      raise ValueError(f"--config.{key}: unknown key {part!r} in {here}; valid keys: {valid}.")
    if i < len(parts) - 1:
      node = node[part]
  leaf = parts[-1]
  if isinstance(node[leaf], ml_collections.ConfigDict):
    raise ValueError(f"--config.{key} is a section; set one of its keys: {sorted(node[leaf])}.")
  if parts[0] == "model" and len(parts) == 2 and "kind" in node:
    node[leaf] = _parse_typed(text, models.flat_annotation(node.kind, leaf), node[leaf])
    return
  try:
    node[leaf] = _parse(text, node[leaf], node.get_type(leaf))
  except (ValueError, TypeError) as e:
    raise ValueError(f"--config.{key}={text}: {e} (current value {node[leaf]!r}).") from None


def from_argv(argv) -> ml_collections.ConfigDict:
  """`--config path.py[:variant]` then any number of `--config.a.b=value` (or `value` apart);
  `--workdir DIR` is `--config.workdir=DIR`, as in the Flax examples."""
  spec, pending, args = None, [], list(argv)
  while args:
    arg = args.pop(0)
    name, eq, value = arg.partition("=")
    if name not in ("--config", "--workdir") and not name.startswith("--config."):
      raise ValueError(f"unknown argument {arg!r}; usage: train.py --config configs/x.py[:variant] "
                       "[--workdir DIR] [--config.a.b=value ...]")
    if not eq:
      if not args:
        raise ValueError(f"{name}: missing value.")
      value = args.pop(0)
    if name == "--config":
      spec = value
    else:
      pending.append(("workdir" if name == "--workdir" else name[len("--config."):], value))
  if not spec:
    raise ValueError("missing --config path.py[:variant] (e.g. --config configs/quickstart.py).")
  config = load(spec)
  for key, value in pending:
    override(config, key, value)
  return config


# The rows of the paper's Tables 2-5: model kind and the options that make the row.
ROWS = {
    "inn": ("inn", {}),
    "no_comm": ("inn", {"communication": "none"}),
    "static_comm": ("inn", {"communication": "static"}),
    "mamba": ("mamba", {}),
    "lstm": ("lstm", {}),
    "transformer": ("transformer", {}),
}
# The paper's character-level baseline sizes (Table 2: LSTM 3 x 512; Transformer 6 layers, 4
# heads, d_model 256, d_ff 1024 for its 4.7M parameters); the INN and the Mamba stack use the model
# defaults (the paper's sizes).
PAPER_SIZES = {"lstm": dict(hidden=512, n_layers=3),
               "transformer": dict(d_model=256, n_layers=6, n_heads=4, d_ff=1024)}
# Rows whose paper-code form differs from ours (embedding init; the INN's neuron identity).
PAPER_ROWS = ("inn", "no_comm", "static_comm", "mamba")


def variants() -> list[str]:
  return list(ROWS) + [f"{row}_paper" for row in PAPER_ROWS]


def table_config(name: str, variant: str | None, sizes: dict, dataset: str, **data_overrides):
  """A config for one table row: `variant` is a row of ROWS, or `<row>_paper` for the paper's
  code form of it (N(0, 1) tied embedding, identical neurons, weight decay on every parameter).

  `sizes` maps a model kind to its size options for this dataset.
  """
  variant = variant or "inn"
  if variant not in variants():
    raise ValueError(f"unknown variant {variant!r}; choose one of {variants()}.")
  row = variant.removesuffix("_paper")
  paper = variant.endswith("_paper")
  kind, options = ROWS[row]
  c = base_config(f"{name}:{variant}", paper_model(kind, paper, **sizes.get(kind, {}), **options),
                  dataset, **data_overrides)
  if paper:
    c.optim.decay_mask = "all"
  # The paper's sizes need tens of GiB at their batch; split the batch only where memory asks.
  c.train.microbatches = 0
  return c
