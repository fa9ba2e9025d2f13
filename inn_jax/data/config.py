"""The data config: every key the data layer reads, its default, and the checks on it."""

from __future__ import annotations

import importlib.util
import math

import ml_collections
from ml_collections import config_dict

LEVELS = ("char", "byte", "word")
NORMALIZE = ("none", "text8")
STREAMS = ("contiguous", "random")
SOURCES = ("native", "tfds")
TFDS_INSTALL = 'pip install -e ".[tfds]"'


def default_data_config() -> ml_collections.ConfigDict:
  """Defaults for ``config.data``; unset placeholders mean "the dataset's own value"."""
  c = ml_collections.ConfigDict()
  c.name = "text8"  # A key of inn_jax.data.CORPORA.
  c.path = config_dict.placeholder(str)  # Local file or folder: skips the download.
  c.cache_dir = config_dict.placeholder(str)  # None: $INN_JAX_CACHE, else ~/.cache/inn_jax.
  # Mirror overrides. Several files: url is a base URL, sha256 a comma-separated list.
  c.url = config_dict.placeholder(str)
  c.sha256 = config_dict.placeholder(str)  # '' skips the check.
  c.size = config_dict.placeholder(int)  # Bytes of the download; 0 skips the check.
  c.level = config_dict.placeholder(str)  # char | byte | word (text_file, pydoc, tiny_shakespeare).
  c.normalize = "none"  # none | text8 (lower-case a-z and space, digits spelled out).
  c.encoding = "utf-8"  # Of text_file's file.
  c.split = (0.9, 0.05, 0.05)  # Contiguous train/valid/test fractions of single-text datasets.
  c.max_chars = config_dict.placeholder(int)  # Keep only the first max_chars train tokens.
  c.batch_size = 32
  c.seq_len = 256
  c.stream = "contiguous"  # contiguous (B streams walked in order) | random (random windows).
  c.seed = 0
  c.eval_batch_size = 32
  # native: the loader above. tfds: a dataset prepared by inn_jax/data/tfds_builders.py (the same
  # ids), read through TFDS from tfds_data_dir, e.g. a lab's shared one.
  c.source = "native"
  c.tfds_data_dir = config_dict.placeholder(str)  # None: $TFDS_DATA_DIR or ~/tensorflow_datasets.
  return c


def _positive_int(cfg, key):
  value = cfg[key]
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"data.{key} must be a positive integer, got {value!r}.")


def resolve(cfg, names=None) -> ml_collections.ConfigDict:
  """``cfg`` over the defaults, checked; raises ValueError naming the bad key and the fix.

  ``names``: the dataset names to accept (None: any).
  """
  full = default_data_config()
  given = cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else dict(cfg)
  unknown = sorted(set(given) - set(full.keys()))
  if unknown:
    raise ValueError(f"unknown data config key(s) {unknown}; the data layer reads: "
                     f"{sorted(full.keys())}.")
  for key, value in given.items():
    full[key] = tuple(value) if key == "split" else value  # A list from the command line.
  if names is not None and full.name not in names:
    raise ValueError(f"data.name={full.name!r} is not a dataset; choose one of {sorted(names)}.")
  for key, choices in (("level", LEVELS), ("normalize", NORMALIZE), ("stream", STREAMS),
                       ("source", SOURCES)):
    if full[key] is not None and full[key] not in choices:
      raise ValueError(f"data.{key}={full[key]!r} is not one of {choices}.")
  for key in ("batch_size", "seq_len", "eval_batch_size"):
    _positive_int(full, key)
  if full.max_chars is not None:
    _positive_int(full, "max_chars")
  if full.size is not None and full.size < 0:
    raise ValueError(f"data.size must be a byte count, or 0 to skip the check; got {full.size}.")
  if full.source != "tfds" and full.tfds_data_dir is not None:
    raise ValueError(f"data.tfds_data_dir={full.tfds_data_dir!r} applies only with "
                     f"data.source='tfds'; unset it, or set data.source='tfds'.")
  if full.source == "tfds":
    missing = [m for m in ("tensorflow_datasets", "array_record")
               if importlib.util.find_spec(m) is None]
    if missing:
      raise ValueError(f"data.source='tfds' needs the tfds extra (not installed: "
                       f"{', '.join(missing)}): {TFDS_INSTALL} (pinned: pip install -r "
                       f"requirements-extras.txt), or set data.source='native'.")
  split = tuple(full.split)
  if (len(split) != 3 or not all(isinstance(f, (int, float)) and f > 0 for f in split)
      or not math.isclose(sum(split), 1.0, abs_tol=1e-9)):
    raise ValueError(f"data.split={split!r} must be three positive fractions (train, valid, test) "
                     f"summing to 1, e.g. (0.9, 0.05, 0.05).")
  return full
