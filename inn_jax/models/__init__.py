"""Whole language models, each tokens_BL -> logits_BLV, built from its typed config.

    from inn_jax.models import INN, INNConfig
    model = INN(INNConfig(d_model=64, n_layers=2, n_neurons=4), vocab_size=27,
                rngs=nnx.Rngs(params=0, dropout=1))

Every model takes (config, vocab_size, *, rngs), has `is_recurrent` and
`init_cache(batch, max_len=None)`, and is called as
`model(tokens_BL, *, cache=None, deterministic=None, rngs=None, return_cache=False)`;
its __call__ checks tokens_BL and cache first (call_args), at trace time under jit.

The trainer's command-line configs hold a model as a flat section (`config.model.<key>`, with
`kind`); `model_config(kind, **flat)` gives one with every key's default, `typed_config(flat)`
the typed config it means (errors name `model.<key>`), `build_model(flat, vocab_size, rngs)`
the model. `register_model(kind, config_class)` adds a model of one's own.
"""

from __future__ import annotations

import dataclasses

import jax
import ml_collections
from flax import nnx

from inn_jax.models.inn import INN, INNConfig
from inn_jax.models.lstm import LSTM, LSTMConfig
from inn_jax.models.mamba_stack import MambaStack, MambaStackConfig
from inn_jax.models.transformer import Transformer, TransformerConfig

# kind -> (model class, config class).
MODELS: dict[str, tuple[type, type]] = {}


def register_model(kind: str, config_class: type):
  """Class decorator: the trainer and `build_model` know the model as `model.kind=<kind>`.

  The model must take (config, vocab_size, *, rngs) with `config` a `config_class` (a frozen
  dataclass; typed.Config gives it the checks and the flat keys), have a bool class attribute
  `is_recurrent`, `init_cache(batch, max_len=None)`, and be called as the models here are.
  """
  def register(model_class):
    if kind in MODELS and MODELS[kind][0] is not model_class:
      raise ValueError(f"register_model: kind {kind!r} is taken by {MODELS[kind][0].__name__}.")
    if not isinstance(getattr(model_class, "is_recurrent", None), bool):
      raise TypeError(f"register_model({kind!r}): {model_class.__name__} needs a bool class "
                      "attribute is_recurrent (does it carry a state between windows?).")
    MODELS[kind] = (model_class, config_class)
    return model_class
  return register


for _kind, _classes in {"inn": (INN, INNConfig), "mamba": (MambaStack, MambaStackConfig),
                        "lstm": (LSTM, LSTMConfig),
                        "transformer": (Transformer, TransformerConfig)}.items():
  register_model(_kind, _classes[1])(_classes[0])


def _classes(kind: str):
  if kind not in MODELS:
    raise ValueError(f"model.kind={kind!r} is not one of {sorted(MODELS)}.")
  return MODELS[kind]


def flat_defaults(kind: str) -> dict:
  """The flat keys of `kind`'s config with their defaults (nested fields as their FLAT names)."""
  config_class = _classes(kind)[1]
  return to_flat(config_class())


def to_flat(config) -> dict:
  """A typed config as the command line's flat keys: plain fields by name, nested configs'
  fields by the names in the class's FLAT table (those not in it are not exposed)."""
  names = {v: k for k, v in getattr(type(config), "FLAT", {}).items()}
  out = {}
  for f in dataclasses.fields(config):
    value = getattr(config, f.name)
    if dataclasses.is_dataclass(value):
      for sub in dataclasses.fields(value):
        if (f.name, sub.name) in names:
          out[names[(f.name, sub.name)]] = getattr(value, sub.name)
    else:
      out[f.name] = value
  return out


def typed_config(flat) -> object:
  """The typed config of a flat model section (kind and keys); a bad key or value raises one
  ValueError naming `model.<key>`."""
  flat = dict(flat.to_dict() if hasattr(flat, "to_dict") else flat)
  kind = flat.pop("kind", None)
  config_class = _classes(kind)[1]
  table = getattr(config_class, "FLAT", {})
  known = set(flat_defaults(kind))
  unknown = sorted(set(flat) - known)
  if unknown:
    raise ValueError(f"model ({kind}): unknown options {unknown}; valid: {sorted(known)}.")
  top, nested = {}, {}
  for key, value in flat.items():
    if key in table:
      field, sub = table[key]
      nested.setdefault(field, {})[sub] = value
    else:
      top[key] = value
  base = config_class()
  for field, subs in nested.items():
    try:
      top[field] = dataclasses.replace(getattr(base, field), **subs)
    except ValueError as e:
      raise ValueError(_flat_names(str(e), table, field)) from None
  try:
    return dataclasses.replace(base, **top)
  except ValueError as e:
    raise ValueError(_flat_names(str(e), table, None)) from None


def _flat_names(message: str, table: dict, field: str | None) -> str:
  """'MambaConfig.scan_method=...' -> 'model.scan_method=...' (the command line's names)."""
  head, sep, rest = message.partition("=")
  owner, dot, name = head.rpartition(".")
  if not sep or not dot or " " in owner:
    return f"model: {message}"
  if field is not None:
    name = next((k for k, v in table.items() if v == (field, name)), name)
  return f"model.{name}={rest}"


def model_config(kind: str, **overrides) -> ml_collections.ConfigDict:
  """A flat model section holding every option of `kind` with its default, then `overrides`."""
  cfg = {"kind": kind, **flat_defaults(kind)}
  unknown = set(overrides) - set(cfg)
  if unknown:
    raise ValueError(f"model_config({kind!r}): unknown options {sorted(unknown)}; "
                     f"valid: {sorted(cfg)}.")
  cfg.update(overrides)
  # Not type-safe: a key may take any type its typed field allows (dt_rank "auto" or 8).
  return ml_collections.ConfigDict(cfg, type_safe=False)


def flat_annotation(kind: str, key: str):
  """The type annotation of flat key `key` of `kind`'s config (None if it has no such key)."""
  import typing
  config_class = _classes(kind)[1]
  table = getattr(config_class, "FLAT", {})
  if key in table:
    field, sub = table[key]
    nested = typing.get_type_hints(config_class)[field]
    return typing.get_type_hints(nested).get(sub)
  return typing.get_type_hints(config_class).get(key)


def build_model(cfg, vocab_size: int, rngs: nnx.Rngs) -> nnx.Module:
  """The model a config names: a flat section (dict or ConfigDict with `kind`) or a typed
  config (INNConfig, ..., or a registered one)."""
  if dataclasses.is_dataclass(cfg):
    model_class = next((m for m, c in MODELS.values() if isinstance(cfg, c)), None)
    if model_class is None:
      raise ValueError(f"build_model: no registered model takes a {type(cfg).__name__}.")
    return model_class(cfg, vocab_size, rngs=rngs)
  kind = (cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)).get("kind")
  return _classes(kind)[0](typed_config(cfg), vocab_size, rngs=rngs)


def is_recurrent(kind: str) -> bool:
  return _classes(kind)[0].is_recurrent


def count_params(model: nnx.Module) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


__all__ = ["INN", "INNConfig", "LSTM", "LSTMConfig", "MODELS", "MambaStack", "MambaStackConfig",
           "Transformer", "TransformerConfig", "build_model", "count_params", "is_recurrent",
           "model_config", "register_model", "to_flat", "typed_config"]
