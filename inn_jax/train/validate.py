"""Config checks that run before any data is read or anything is compiled; each names the fix."""

from __future__ import annotations

import importlib.util

from inn_jax import data, models
from inn_jax.models import MODELS
from inn_jax.train import config as config_lib
from inn_jax.train import evaluate, optimizer, profile
from inn_jax.train.mesh import mesh_shape

_POSITIVE = {
    "data": ("batch_size", "seq_len", "eval_batch_size"),
    "train": ("steps", "keep"),
}
DTYPES = ("float32", "bfloat16", "float16")  # model.dtype: activations and matmuls.
_NON_NEGATIVE = {"train": ("log_every", "eval_every", "save_every", "eval_windows", "stop_at",
                           "microbatches"), "eval": ("microbatches",)}


class ConfigError(ValueError):
  """A config that cannot run; the message names the key and the fix."""


def _fail(key: str, message: str):
  raise ConfigError(f"config.{key}: {message}")


def check_config(config, n_devices: int, *, corpus_given: bool = False):
  """Raises ValueError for the first problem found in `config` on `n_devices` devices
  (corpus_given: the corpus comes from the caller, so data.name need not be a dataset)."""
  if config.mode not in config_lib.MODES:
    _fail("mode", f"{config.mode!r} is not one of {config_lib.MODES}.")
  m, d = config.model, config.data
  if m.kind not in MODELS:
    _fail("model.kind", f"unknown model {m.kind!r}; choose one of {sorted(MODELS)}.")
  if d.name not in data.CORPORA and not corpus_given:
    _fail("data.name", f"unknown dataset {d.name!r}; choose one of {sorted(data.CORPORA)}.")
  for key, value in m.items():
    if isinstance(value, int) and not isinstance(value, bool) and value <= 0:
      _fail(f"model.{key}", f"must be positive, got {value}.")
  for section, keys in _POSITIVE.items():
    for key in keys:
      if config[section][key] <= 0:
        _fail(f"{section}.{key}", f"must be positive, got {config[section][key]}.")
  for section, keys in _NON_NEGATIVE.items():
    for key in keys:
      if config[section][key] < 0:
        _fail(f"{section}.{key}", f"must be >= 0, got {config[section][key]}.")
  if m.dtype not in DTYPES:
    _fail("model.dtype", f"{m.dtype!r} is not a supported compute dtype; choose one of {DTYPES} "
          "(float32 on CPUs).")
  for key, value in m.items():
    if key.endswith("dropout") and not 0 <= value < 1:
      _fail(f"model.{key}", f"{value} is not a dropout rate in [0, 1); use e.g. 0.1, or 0 for "
            "none.")
  if "n_heads" in m:
    width = m.get("d_model", m.get("hidden"))
    if width % m.n_heads:
      _fail("model.n_heads", f"{m.n_heads} heads do not divide the width d_model={width}; "
            f"pick n_heads among {[h for h in range(1, width + 1) if width % h == 0]}.")
  try:  # Every option's type and choices (a scan_method typo), named as on the command line.
    models.typed_config(m)
  except ValueError as e:
    raise ConfigError(f"config.{e}" if str(e).startswith("model") else f"config.model: {e}"
                      ) from None
  _check_mesh(config, n_devices)
  _check_optim(config.optim)
  evaluate.carry_modes(m.kind, config.eval.carry_state)
  bad = set(config.eval.splits) - {"valid", "test"}
  if bad:
    _fail("eval.splits", f"unknown splits {sorted(bad)}; use 'valid' and/or 'test'.")
  try:
    profile.parse_steps(config.train.profile_steps, config.train.steps)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  _check_log(config.log)


def _check_log(log):
  if not log.wandb:
    return
  if importlib.util.find_spec("wandb") is None:  # Found, not imported: that is the run's job.
    _fail("log.wandb", 'true needs the wandb package, which is not installed: pip install -e '
          '".[wandb]" (or pip install wandb), or set --config.log.wandb=false.')
  if not str(log.wandb_project).strip():
    _fail("log.wandb_project", "is empty; name a W&B project, e.g. --config.log.wandb_project="
          "inn_jax.")


def _check_mesh(config, n_devices: int):
  mesh = config.mesh
  if mesh.neuron <= 0 or (mesh.data <= 0 and mesh.data != -1):
    _fail("mesh", f"sizes must be positive (data may be -1 = the rest), got {mesh.to_dict()}.")
  if mesh.data == -1 and n_devices % mesh.neuron:
    _fail("mesh.neuron", f"{mesh.neuron} does not divide the {n_devices} devices.")
  data_size, neuron_size = mesh_shape(mesh, n_devices)
  if data_size * neuron_size > n_devices or data_size < 1:
    _fail("mesh", f"data={data_size} x neuron={neuron_size} needs more than the {n_devices} "
          "devices; set mesh.data=-1 to use all that the neuron axis leaves.")
  if neuron_size > 1:
    if config.model.kind != "inn":
      _fail("mesh.neuron", f"only the INN has a neuron axis; set mesh.neuron=1 for "
            f"model.kind={config.model.kind!r}.")
    if config.model.n_neurons % neuron_size:
      _fail("mesh.neuron", f"the neuron axis size {neuron_size} does not divide "
            f"model.n_neurons={config.model.n_neurons}; pick a divisor of it.")
  for key in ("batch_size", "eval_batch_size"):
    if config.data[key] % data_size:
      _fail(f"data.{key}", f"{config.data[key]} is not divisible by the data-parallel size "
            f"{data_size} (mesh.data); use a multiple of {data_size}.")
  for section, batch_key in (("train", "batch_size"), ("eval", "eval_batch_size")):
    check_microbatches(f"{section}.microbatches", config[section].microbatches, batch_key,
                       config.data[batch_key], data_size)


def check_microbatches(key: str, k: int, batch_key: str, batch: int, data_size: int,
                       fix: str | None = None):
  """k slices of each device's rows: batch must divide by k x the data-parallel size."""
  if k > 1 and batch % (k * data_size):
    fix = fix or f"use a batch size that is a multiple of {k * data_size} or fewer micro-batches"
    _fail(key, f"{k} micro-batches x data-parallel size {data_size} do not divide "
          f"data.{batch_key}={batch}; {fix}.")


def _check_optim(o):
  if o.lr <= 0:
    _fail("optim.lr", f"must be positive, got {o.lr}.")
  if o.schedule not in optimizer.SCHEDULES:
    _fail("optim.schedule", f"{o.schedule!r} is not one of {optimizer.SCHEDULES}.")
  if o.decay_mask not in optimizer.DECAY_MASKS:
    _fail("optim.decay_mask", f"{o.decay_mask!r} is not one of {optimizer.DECAY_MASKS}.")
  if not 0 < o.pct_start < 1:
    _fail("optim.pct_start", f"must be in (0, 1), got {o.pct_start}.")
  if o.clip_norm < 0 or o.weight_decay < 0:
    _fail("optim", "clip_norm and weight_decay must be >= 0.")


def check_corpus(config, corpus):
  """Every split the run reads must hold one window: seq_len inputs and their targets."""
  data.validate(config.data, corpus)
  splits = (("train",) if config.mode == "train" else ()) + tuple(config.eval.splits)
  for split in splits:
    have = len(getattr(corpus, split))
    if config.data.seq_len > have - 1:
      _fail("data.seq_len", f"{config.data.seq_len} is longer than the {split} split of "
            f"{config.data.name} ({have} tokens, {have - 1} targets); use at most "
            f"{max(have - 1, 1)} or a bigger corpus.")
