"""Honest evaluation: every target token of a split scored exactly once, summed in float64.

Windows either start from an empty state (every model) or carry the recurrent state from the
window before (INN, Mamba stack, LSTM; a Transformer's KV cache is not a recurrent state).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from inn_jax import data
from inn_jax.train import mesh as mesh_lib

RECURRENT = ("inn", "mamba", "lstm")
CARRY_SETTINGS = ("auto", "yes", "no")


def carry_modes(kind: str, setting: str) -> tuple[bool, ...]:
  """Which ways to evaluate: (False,) = fresh state per window, (True,) = carried, or both."""
  if setting not in CARRY_SETTINGS:
    raise ValueError(f"eval.carry_state={setting!r} is not one of {CARRY_SETTINGS}.")
  recurrent = kind in RECURRENT
  if setting == "yes" and not recurrent:
    raise ValueError(f"eval.carry_state='yes' needs a recurrent model {RECURRENT}, not {kind!r}; "
                     "use 'no' or 'auto'.")
  if setting == "no":
    return (False,)
  return (True,) if setting == "yes" else ((False, True) if recurrent else (False,))


class Evaluator:
  """`score(params, tokens, ...)` -> (total nats, target tokens) under a mesh."""

  def __init__(self, graphdef, rest, mesh, compiler_options=None):
    self.mesh = mesh
    rows = mesh_lib.batch_sharding(mesh)
    shardings = (mesh_lib.replicated(mesh), rows, rows, rows)

    def step(params, x_BL, y_BL, mask_BL, cache):
      model = nnx.merge(graphdef, params, rest)
      if cache is False:
        logits_BLV = model(x_BL)
      else:
        logits_BLV, cache = model(x_BL, cache=cache, return_cache=True)
      nats_BL = optax.softmax_cross_entropy_with_integer_labels(logits_BLV, y_BL)
      return (jnp.sum(jnp.where(mask_BL, nats_BL, 0.0)), jnp.sum(mask_BL.astype(jnp.float32)),
              cache)

    rep = mesh_lib.replicated(mesh)
    opts = dict(compiler_options=compiler_options or None)
    self._fresh = jax.jit(lambda p, x, y, m: step(p, x, y, m, False)[:2],
                          in_shardings=shardings, out_shardings=(rep, rep), **opts)
    # cache=None starts a recurrent state; later windows pass the state back.
    self._carry = jax.jit(step, in_shardings=(*shardings, None), out_shardings=(rep, rep, None),
                          **opts)

  def score(self, params, tokens: np.ndarray, batch_size: int, seq_len: int, *,
            carry: bool = False, max_windows: int = 0) -> tuple[float, int]:
    """Total nats and scored tokens over `tokens` (all of it unless max_windows > 0)."""
    rows = mesh_lib.batch_sharding(self.mesh)
    sums, cache = [], None
    with jax.set_mesh(self.mesh):
      for i, (x_BL, y_BL, mask_BL) in enumerate(
          data.eval_batches(tokens, batch_size, seq_len, carry_state=carry)):
        if max_windows and i >= max_windows:
          break
        x, y, m = (mesh_lib.global_batch(np.asarray(a), rows) for a in (x_BL, y_BL, mask_BL))
        if carry:
          nats, count, cache = self._carry(params, x, y, m, cache)
        else:
          nats, count = self._fresh(params, x, y, m)
        sums.append((nats, count))
    sums = mesh_lib.fetch(sums)
    return (float(np.sum([s[0] for s in sums], dtype=np.float64)),
            int(round(np.sum([s[1] for s in sums], dtype=np.float64))))
