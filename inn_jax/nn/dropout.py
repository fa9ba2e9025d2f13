"""Dropout that builds without a "dropout" stream (the randomness may come with each call)."""

from __future__ import annotations

from flax import nnx


def dropout(rate: float, rngs: nnx.Rngs | None) -> nnx.Dropout:
  """nnx.Dropout(rate), drawing from rngs' "dropout" stream when it has one; without it the
  masks must come from the call (`rngs=` of the models' __call__), or the model must be in
  eval mode (inn_jax.models.call_args.dropout_rngs says which in one line)."""
  return nnx.Dropout(rate, rngs=rngs if has_stream(rngs, "dropout") else None)


def has_stream(rngs, name: str) -> bool:
  """Whether rngs[name] draws keys (its own stream, or nnx.Rngs' "default" fallback)."""
  if rngs is None:
    return False
  try:
    rngs[name]
  except KeyError:
    return False
  return True
