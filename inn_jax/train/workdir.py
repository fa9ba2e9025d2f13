"""What a run keeps beside its checkpoints, and the check that a resumed run is the same run.

    config.json           the whole config, written once at the run's first start, with the
                          vocabulary size and what that start resolved ("resolved": the micro-batch
                          counts chosen for train.microbatches / eval.microbatches = 0, the
                          corpus's sha256 and its record (corpus_record: name, text sha256 and
                          length, ids), the layout of the training state, the scan path that
                          model.scan_method = "auto" ran)
    vocab.json            the vocabulary (inn_jax.data.vocab's to_json): sampling needs no corpus
    config_history.jsonl  each change accepted on resume with train.allow_changes=true

On resume every key must equal the saved one (with the accepted changes applied) except NEUTRAL
keys, which cannot change what the run computes. A micro-batch count of 0 (automatic) means the
count the run chose at its first start; an explicit count must equal it. model.scan_method =
"auto" means the path the first start ran, where that path runs on this machine.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import pathlib

import jax
import numpy as np

from inn_jax.data import vocab as data_vocab

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
HISTORY_FILE = "config_history.jsonl"
# Keys that may differ on resume: where and how the run is driven, logged (TensorBoard, W&B),
# profiled and kept, and where the data is found (the corpus itself is compared by its sha256).
# `a.*` is every key of section a.
# The device count is no key: other meshes agree to float rounding (tests/test_distributed.py).
NEUTRAL = ("workdir", "mode", "train.stop_at", "train.keep", "train.async_save",
           "train.allow_changes", "train.log_every", "train.save_every", "train.profile_steps",
           "log.*", "distributed.*", "data.path", "data.cache_dir", "data.url", "data.sha256",
           "data.size", "data.source", "data.tfds_data_dir")
MICROBATCH_KEYS = ("train.microbatches", "eval.microbatches")
CORPUS_KEY = "corpus_sha256"  # In "resolved", and compared like a key once the data is read.
CORPUS_RECORD = "corpus"  # In "resolved" and results.json: corpus_record(), what the run read.
# In "resolved": the scan path model.scan_method="auto" ran at the first start; a resumed run
# keeps it where it runs (runner.Run), else the change is recorded under this key.
SCAN_KEY = "scan_method"
_ABSENT = "<absent>"


def as_json(config) -> dict:
  """The config as config.json holds it (tuples become lists)."""
  return json.loads(json.dumps(config.to_dict(), default=str))


def flatten(tree: dict, prefix: str = "") -> dict:
  """{"a": {"b": 1}} -> {"a.b": 1}."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def is_neutral(key: str) -> bool:
  return any(key == n or (n.endswith(".*") and key.startswith(n[:-1])) for n in NEUTRAL)


def differences(saved: dict, current: dict, keys) -> dict:
  """{key: (saved, current)} over flat dicts, for every non-neutral key of `keys` that
  differs."""
  return {k: (saved.get(k, _ABSENT), current.get(k, _ABSENT)) for k in keys
          if not is_neutral(k) and saved.get(k, _ABSENT) != current.get(k, _ABSENT)}


def describe(changes: dict) -> str:
  return "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())


def changes(saved_flat: dict, config, *, model_only: bool = False) -> dict:
  """{key: (saved, now)} for the keys of `config` that differ from the saved run, with 0
  micro-batches read as the saved counts. model_only: the model section alone (evaluating a
  checkpoint again)."""
  current = flatten(as_json(config))
  for k in MICROBATCH_KEYS:
    if current.get(k) == 0 and k in saved_flat:
      current[k] = saved_flat[k]
  # A model option a later version added, at the default that keeps the earlier behaviour, is
  # no change: the saved run simply predates it.
  from inn_jax import models
  try:
    defaults = models.flat_defaults(current.get("model.kind"))
  except ValueError:
    defaults = {}
  for key, value in defaults.items():
    k = f"model.{key}"
    if k not in saved_flat and current.get(k) == value:
      current.pop(k)
  keys = sorted(set(saved_flat) | set(current))
  return differences(saved_flat, current,
                     [k for k in keys if k.startswith("model.")] if model_only else keys)


def corpus_sha256(corpus) -> str:
  """sha256 over the vocabulary and every split's ids."""
  h = hashlib.sha256(corpus.vocab.to_json().encode())
  for split in (corpus.train, corpus.valid, corpus.test):
    a = np.ascontiguousarray(split)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def corpus_record(corpus, tokens_sha256: str | None = None) -> dict:
  """What a run trains on, as its results and config.json record it: the corpus's name; the
  sha256 and length in characters of the text its ids come from, where one text is read whole
  (pydoc: the shipped text; text_file, tiny_shakespeare: the file's; else None); the sha256 of
  each file behind it by file name (downloaded and local corpora; else None); the number of ids
  over the three splits and corpus_sha256 of them with the vocabulary (`tokens_sha256` if
  already computed). Arrays in memory have only these last two."""
  meta = corpus.meta
  text = meta.get("text") or {}
  files = meta.get("sha256") if meta.get("name") != "pydoc" else None
  files = files if isinstance(files, dict) else None
  return {"name": meta.get("name"), "sha256": text.get("sha256"), "chars": text.get("chars"),
          "files": {pathlib.Path(k).name: v for k, v in files.items()} if files else None,
          "tokens": int(sum(len(s) for s in (corpus.train, corpus.valid, corpus.test))),
          "tokens_sha256": tokens_sha256 or corpus_sha256(corpus)}


def layout_sha256(state) -> str:
  """sha256 over the paths, shapes and dtypes of a (possibly abstract) training state."""
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  text = ";".join(f"{jax.tree_util.keystr(p)}:{np.dtype(x.dtype).str}{tuple(x.shape)}"
                  for p, x in leaves)
  return hashlib.sha256(text.encode()).hexdigest()


class Workdir:
  """The run records of one workdir; only process 0 writes."""

  def __init__(self, path):
    self.path = pathlib.Path(path).absolute()
    self.main = jax.process_index() == 0

  def saved(self) -> tuple[dict, dict] | None:
    """(flat config, resolved) as the run stands: config.json with every accepted change
    applied and, for the micro-batch keys, the counts in use; None without config.json."""
    path = self.path / CONFIG_FILE
    if not path.is_file():
      return None
    record = json.loads(path.read_text())
    resolved = record.pop("resolved", {})
    record.pop("vocab_size", None)
    flat = flatten(record)
    flat.update({k: resolved[k] for k in MICROBATCH_KEYS if k in resolved})
    history = self.path / HISTORY_FILE
    for line in history.read_text().splitlines() if history.is_file() else []:
      for key, (_, new) in json.loads(line)["changes"].items():
        (resolved if key in (CORPUS_KEY, SCAN_KEY) else flat)[key] = new
    return flat, resolved

  def check_vocab(self, vocab):
    """Raises ValueError if vocab.json holds another vocabulary than `vocab` (a corpus changed
    since the run: ids would decode to other symbols)."""
    path = self.path / VOCAB_FILE
    if path.is_file() and json.loads(path.read_text()) != json.loads(vocab.to_json()):
      saved = data_vocab.from_json(path.read_text())
      raise ValueError(
          f"the corpus now has another vocabulary ({vocab.size} symbols) than the run trained on "
          f"({saved.size} symbols, {path}); restore the data the run was trained on (data.path, "
          "data.cache_dir), or use the run's own vocabulary.")

  def write(self, config, vocab, resolved: dict):
    """config.json and vocab.json of a run's first start; drops the history of an earlier run
    that saved no checkpoint."""
    if not self.main:
      return
    self.path.mkdir(parents=True, exist_ok=True)
    record = {**as_json(config), "vocab_size": vocab.size, "resolved": resolved}
    _write_atomic(self.path / CONFIG_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n")
    _write_atomic(self.path / VOCAB_FILE, vocab.to_json() + "\n")
    (self.path / HISTORY_FILE).unlink(missing_ok=True)

  def record_changes(self, step: int, changes: dict):
    """Appends the changes accepted when resuming at `step` to config_history.jsonl."""
    if not (self.main and changes):
      return
    row = {"step": step, "time": datetime.datetime.now().isoformat(timespec="seconds"),
           "changes": {k: list(v) for k, v in changes.items()}}
    with open(self.path / HISTORY_FILE, "a", encoding="utf-8") as f:
      f.write(json.dumps(row, default=str) + "\n")


def _write_atomic(path: pathlib.Path, text: str):
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text)
  tmp.replace(path)
