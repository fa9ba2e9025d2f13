"""Typed configs: frozen dataclasses whose `Literal` options and ranges are checked on creation.

Every model and block config in the package derives from `Config`. A bad value fails where the
config is made, in one line naming the class, the field, the value and the choices:

    MambaConfig(scan_method="blockd")
    ValueError: MambaConfig.scan_method='blockd' must be one of ('auto', 'sequential', ...).

Subclasses add their own range checks in `check()` (called after the Literal checks).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing

_UNIONS = (typing.Union, types.UnionType)
DType = typing.Literal["float32", "bfloat16", "float16"]  # Compute dtypes (parameters: float32).


@functools.cache
def _hints(cls) -> dict:
  return typing.get_type_hints(cls)


def _allows(tp, value) -> bool:
  """Whether `value` fits annotation `tp` (Literal members, int, float, bool, str, None, Union)."""
  origin = typing.get_origin(tp)
  if tp is typing.Any:
    return True
  if origin is typing.Literal:
    return value in typing.get_args(tp)
  if origin in _UNIONS:
    return any(_allows(a, value) for a in typing.get_args(tp))
  if tp is type(None):
    return value is None
  if tp is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if tp is int:
    return isinstance(value, int) and not isinstance(value, bool)
  if isinstance(tp, type):
    return isinstance(value, tp)
  return True  # Nested configs and other annotations are checked by their own classes.


class Config:
  """Base of the typed configs (use with @dataclasses.dataclass(frozen=True))."""

  def __post_init__(self):
    name = type(self).__name__
    for field in dataclasses.fields(self):
      tp, value = _hints(type(self))[field.name], getattr(self, field.name)
      if dataclasses.is_dataclass(value):
        continue
      if not _allows(tp, value):
        raise ValueError(f"{name}.{field.name}={value!r} must be {_describe(tp)}.")
    self.check()

  def check(self):
    """Range checks beyond the types (subclasses)."""

  def replace(self, **changes):
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def _describe(tp) -> str:
  if typing.get_origin(tp) is typing.Literal:
    return f"one of {typing.get_args(tp)}"
  if typing.get_origin(tp) in _UNIONS:
    return " or ".join(_describe(a) for a in typing.get_args(tp))
  return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))


def positive(owner: str, **values):
  """Raises unless every value is a positive number."""
  for key, value in values.items():
    if value is None or value <= 0:
      raise ValueError(f"{owner}.{key}={value!r} must be positive.")


def rate(owner: str, **values):
  """Raises unless every value is a rate in [0, 1)."""
  for key, value in values.items():
    if not 0.0 <= value < 1.0:
      raise ValueError(f"{owner}.{key}={value!r} must be in [0, 1).")
