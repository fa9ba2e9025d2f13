"""Tiny corpora and configs for tests and smoke runs: seconds on a CPU, nothing downloaded."""

from __future__ import annotations

import pathlib

import numpy as np

from inn_jax.train.config import base_config, paper_model

# Model options that set sizes, shrunk by tiny_model (other options are kept).
TINY_SIZES = {"d_model": 16, "n_layers": 2, "n_neurons": 4, "n_heads": 2, "d_state": 4,
              "hidden": 16, "d_ff": 32, "d_embed": None, "max_len": 64, "scan_chunk": 8}


def write_corpus(path, n_chars: int = 6000, seed: int = 0) -> pathlib.Path:
  """A text of lowercase 'words' from a fixed Markov chain (learnable, not trivial)."""
  rng = np.random.default_rng(seed)
  letters = np.array(list("abcdefgh "))
  transition = rng.dirichlet(np.full(len(letters), 0.3), size=len(letters))
  ids = [0]
  for _ in range(n_chars - 1):
    ids.append(rng.choice(len(letters), p=transition[ids[-1]]))
  path = pathlib.Path(path)
  path.write_text("".join(letters[ids]))
  return path


def tiny_model(model):
  """`model` (a model config) with TINY_SIZES for the keys it has."""
  model = model.copy_and_resolve_references()
  for key, value in TINY_SIZES.items():
    if key in model:
      model[key] = value
  return model


def tiny_config(tmp_path, kind: str = "inn", *, steps: int = 4, **model_overrides):
  """A complete run config on a tiny text_file corpus in tmp_path (written once)."""
  tmp_path = pathlib.Path(tmp_path)
  tmp_path.mkdir(parents=True, exist_ok=True)
  corpus = tmp_path / "tiny.txt"
  if not corpus.exists():
    write_corpus(corpus)
  model = tiny_model(paper_model(kind, False))
  model.update(model_overrides)
  c = base_config(f"tiny:{kind}", model, "text_file", path=str(corpus),
                  cache_dir=str(tmp_path / "cache"), batch_size=8, seq_len=16,
                  eval_batch_size=8)
  c.workdir = str(tmp_path / "workdir")
  c.train.update(steps=steps, log_every=1, eval_every=0, save_every=0, async_save=False)
  c.log.update(tensorboard=False, progress=False)
  c.compiler_options = {"xla_backend_optimization_level": 0}  # 3x faster CPU compiles.
  return c
