"""Whole language models, each tokens_BL -> logits_BLV, built from a config by `build_model`.

Every model's __call__ checks tokens_BL and cache first (call_args), at trace time under jit."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from inn_jax.models.inn import INN
from inn_jax.models.lstm import LSTM
from inn_jax.models.mamba_stack import MambaStack
from inn_jax.models.transformer import Transformer

MODELS = {"inn": INN, "mamba": MambaStack, "lstm": LSTM, "transformer": Transformer}
_NOT_CONFIG = ("self", "vocab_size", "rngs", "dtype")


def _options(kind: str) -> dict:
  if kind not in MODELS:
    raise ValueError(f"model.kind={kind!r} is not one of {sorted(MODELS)}.")
  params = inspect.signature(MODELS[kind].__init__).parameters
  return {k: p.default for k, p in params.items() if k not in _NOT_CONFIG}


def model_config(kind: str, **overrides) -> ml_collections.ConfigDict:
  """A model config holding every option of `kind` with its default, then `overrides`."""
  cfg = {"kind": kind, "dtype": "float32", **_options(kind)}
  unknown = set(overrides) - set(cfg)
  if unknown:
    raise ValueError(f"model_config({kind!r}): unknown options {sorted(unknown)}; "
                     f"valid: {sorted(cfg)}.")
  cfg.update(overrides)
  return ml_collections.ConfigDict(cfg)


def build_model(cfg, vocab_size: int, rngs: nnx.Rngs) -> nnx.Module:
  """Builds the model that `cfg` (a model config: kind, dtype and constructor options) names."""
  kw = dict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
  kind = kw.pop("kind", None)
  dtype = jnp.dtype(kw.pop("dtype", "float32"))
  unknown = set(kw) - set(_options(kind))
  if unknown:
    raise ValueError(f"model ({kind}): unknown options {sorted(unknown)}; valid: "
                     f"{sorted(_options(kind))}. Fix the config's model section.")
  return MODELS[kind](vocab_size, **kw, dtype=dtype, rngs=rngs)


def count_params(model: nnx.Module) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


__all__ = ["INN", "LSTM", "MODELS", "MambaStack", "Transformer", "build_model", "count_params",
           "model_config"]
