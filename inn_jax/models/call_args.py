"""The models' call contract, checked at the top of every model's __call__.

    tokens_BL  (batch, length) integer token ids, batch and length >= 1, each 0 <= id < V
    deterministic  None, True or False
    cache      None, or what the model's init_cache(batch) returns for tokens_BL's batch: the same
               structure (one entry per layer, the same named fields) and the same shapes

Checks run in plain Python on static shapes and dtypes, so a wrong argument fails with its name
before any tracing; under jit they run once, at trace time, and add nothing to the compiled step.

Token ids' values are checked where they are concrete (an eager call: one transfer of the ids to
the host, before any work). Under jit they are values the trace cannot see: there an id outside
[0, V) is not clamped to a real token (what a plain gather does) but gives NaN logits at its
position and after it (inn_jax.nn.embed.Embedder.encode; the Transformer's masked attention sums
spread the NaN over the row), so the loss turns NaN and the trainer's finite check stops the run,
naming the step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from inn_jax.nn.dropout import has_stream


def check_tokens(model: str, tokens_BL, vocab_size: int | None = None) -> None:
  """Raises unless tokens_BL is a 2-D integer array with at least one row and one step, and
  (when concrete and vocab_size is given) every id is in [0, vocab_size)."""
  if not (hasattr(tokens_BL, "shape") and hasattr(tokens_BL, "dtype")):
    raise TypeError(f"{model}: tokens_BL must be an integer array (batch, length), got "
                    f"{type(tokens_BL).__name__}.")
  shape = tuple(tokens_BL.shape)
  if len(shape) != 2 or min(shape) < 1:
    raise ValueError(f"{model}: tokens_BL must be 2-D (batch, length), both >= 1, got shape "
                     f"{shape}; give one sequence as tokens[None].")
  if not jnp.issubdtype(tokens_BL.dtype, jnp.integer):
    raise TypeError(f"{model}: tokens_BL must hold integer token ids, got dtype "
                    f"{tokens_BL.dtype}.")
  if vocab_size is None or isinstance(tokens_BL, jax.core.Tracer):
    return
  ids = np.asarray(tokens_BL)
  bad = np.argwhere((ids < 0) | (ids >= vocab_size))
  if len(bad):
    row, step = (int(i) for i in bad[0])
    raise ValueError(f"{model}: tokens_BL[{row}, {step}] = {int(ids[row, step])} is not a token "
                     f"id of this model's vocabulary (0 <= id < vocab_size={vocab_size}; "
                     f"{len(bad)} ids outside); encode the text with the model's own vocabulary.")


def check_deterministic(model: str, deterministic) -> None:
  """Raises unless deterministic is None, True or False."""
  if deterministic is not None and not isinstance(deterministic, (bool, np.bool_)):
    raise TypeError(f"{model}: deterministic must be None (follow model.train() / eval()), True "
                    f"(dropout off) or False (on), got {deterministic!r}.")


def check_cache(model: str, cache, init, batch: int) -> None:
  """Raises unless `cache` has the structure and leaf shapes of init() (the model's init_cache
  for `batch` rows, evaluated abstractly: nothing is allocated or traced into the caller), and
  integer leaves where init's are integer (a Transformer's position counter)."""
  want = jax.tree_util.tree_flatten_with_path(jax.eval_shape(init))[0]
  got = jax.tree_util.tree_flatten_with_path(cache)[0]
  want_paths = [jax.tree_util.keystr(p) for p, _ in want]
  got_paths = [jax.tree_util.keystr(p) for p, _ in got]
  if got_paths != want_paths:
    raise ValueError(f"{model}: cache must be structured as init_cache({batch}) returns, "
                     f"{len(want_paths)} arrays ({', '.join(want_paths[:2])}, ...); got "
                     f"{len(got_paths)}, {_first_difference(got_paths, want_paths)}. Pass the "
                     f"cache a call returned, or init_cache(batch).")
  for (path, w), (_, g) in zip(want, got):
    name = f"cache{jax.tree_util.keystr(path)}"
    shape = tuple(np.shape(g))  # Arrays, tracers, ShapeDtypeStructs; a Python int is ().
    if shape != tuple(w.shape):
      raise ValueError(f"{model}: {name} must have shape {tuple(w.shape)} for tokens_BL of batch "
                       f"{batch} (as init_cache({batch})), got {shape}.")
    dtype = g.dtype if hasattr(g, "dtype") else np.result_type(g)
    if jnp.issubdtype(w.dtype, jnp.integer) and not jnp.issubdtype(dtype, jnp.integer):
      raise TypeError(f"{model}: {name} must be integer, got dtype {dtype}.")


def _first_difference(got: list[str], want: list[str]) -> str:
  for g, w in zip(got, want):
    if g != w:
      return f"{g} where {w} belongs"
  return f"without {want[len(got)]}" if len(got) < len(want) else f"with an extra {got[len(want)]}"


def dropout_rngs(model: str, rngs, dropouts, deterministic):
  """The call's dropout randomness as nnx.Rngs (a key becomes nnx.Rngs(dropout=key), created
  inside the caller's trace, so drawing from it mutates nothing outside), or None to use the
  modules' own streams. Raises, naming the fixes, when a dropout would run with no randomness:
  training mode, a positive rate, no `rngs` and a model built without a "dropout" stream; and
  when deterministic is not None or a bool."""
  check_deterministic(model, deterministic)
  if rngs is not None:
    if isinstance(rngs, jax.Array):
      return nnx.Rngs(dropout=rngs)
    if isinstance(rngs, nnx.Rngs) and has_stream(rngs, "dropout"):
      return rngs
    raise TypeError(f"{model}: rngs must be a jax random key or nnx.Rngs with a 'dropout' "
                    f"stream, got {type(rngs).__name__}.")
  for d in dropouts:
    off = d.deterministic if deterministic is None else deterministic
    if d.rate > 0 and not off and d.rngs is None:
      raise ValueError(f"{model}: dropout (rate {d.rate}) is on but the model has no 'dropout' "
                       "stream: pass rngs=<key> to the call, build it with nnx.Rngs(params=..., "
                       "dropout=...), or turn dropout off (model.eval() or deterministic=True).")
  return None
