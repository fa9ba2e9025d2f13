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

from inn_jax import data, models
from inn_jax.train import memory
from inn_jax.train import mesh as mesh_lib

CARRY_SETTINGS = ("auto", "yes", "no")


def carry_modes(kind: str, setting: str) -> tuple[bool, ...]:
  """Which ways to evaluate: (False,) = fresh state per window, (True,) = carried, or both."""
  if setting not in CARRY_SETTINGS:
    raise ValueError(f"eval.carry_state={setting!r} is not one of {CARRY_SETTINGS}.")
  recurrent = models.is_recurrent(kind)
  if setting == "yes" and not recurrent:
    raise ValueError(f"eval.carry_state='yes' needs a recurrent model (is_recurrent), not "
                     f"{kind!r}; "
                     "use 'no' or 'auto'.")
  if setting == "no":
    return (False,)
  return (True,) if setting == "yes" else ((False, True) if recurrent else (False,))


class Evaluator:
  """`score(params, tokens, ...)` -> (total nats, target tokens) under a mesh.

  Each eval batch may run as micro-batches inside its compiled step (`microbatches` k > 0, or 0:
  the fewest that fit `limit` bytes, see memory.fit); the windows, and so the result, are the
  same for every k (up to float32 summation order).
  """

  def __init__(self, graphdef, rest, mesh, compiler_options=None, microbatches: int = 1,
               limit: float = 0.0):
    self.mesh, self.microbatches, self.limit = mesh, microbatches, limit
    self._graphdef, self._rest = graphdef, rest
    self._opts = dict(compiler_options=compiler_options or None)
    self._steps = {}  # (batch, seq_len) -> (compiled fresh step, jitted carry step, k)

  def _window(self, params, x_BL, y_BL, mask_BL, cache):
    model = nnx.merge(self._graphdef, params, self._rest)
    if cache is False:
      logits_BLV = model(x_BL)
    else:
      logits_BLV, cache = model(x_BL, cache=cache, return_cache=True)
    nats_BL = optax.softmax_cross_entropy_with_integer_labels(logits_BLV, y_BL)
    return jnp.sum(jnp.where(mask_BL, nats_BL, 0.0)), jnp.sum(mask_BL.astype(jnp.float32)), cache

  def _split(self, k: int, carry: bool):
    """The window function over k row slices; a state's rows (batch x r, batch-major) split
    with their batch row."""
    def step(params, x_BL, y_BL, mask_BL, cache=False):
      if k == 1:
        return self._window(params, x_BL, y_BL, mask_BL, cache if carry else False)
      batch = x_BL.shape[0]
      def split_state(c):
        c = memory.split_rows(c.reshape(batch, -1, *c.shape[1:]), k)
        return c.reshape(k, -1, *c.shape[3:])

      def join_state(c):
        c = memory.join_rows(c.reshape(k, batch // k, -1, *c.shape[2:]))
        return c.reshape(-1, *c.shape[2:])

      xs = [memory.split_rows(a, k) for a in (x_BL, y_BL, mask_BL)]
      states = jax.tree.map(split_state, cache) if carry else None
      nats, count, cache = jax.lax.map(
          lambda a: self._window(params, *a[:3], a[3] if carry else False), (*xs, states))
      cache = jax.tree.map(join_state, cache) if carry else cache
      return jnp.sum(nats), jnp.sum(count), cache
    return step

  def _prepare(self, params, batch: int, seq_len: int):
    key = (batch, seq_len)
    if key not in self._steps:
      rows = mesh_lib.batch_sharding(self.mesh)
      rep = mesh_lib.replicated(self.mesh)
      shardings = (mesh_lib.state_shardings(params, self.mesh), rows, rows, rows)
      spec = jax.ShapeDtypeStruct((batch, seq_len), jnp.int32, sharding=rows)
      mask = jax.ShapeDtypeStruct((batch, seq_len), jnp.bool_, sharding=rows)

      def compile_fresh(k):
        fn = jax.jit(lambda p, x, y, m: self._split(k, False)(p, x, y, m)[:2],
                     in_shardings=shardings, out_shardings=(rep, rep), **self._opts)
        with jax.set_mesh(self.mesh):
          return fn.lower(params, spec, spec, mask).compile()

      fresh, k = memory.fit(compile_fresh, key, self.mesh.shape["data"], self.microbatches,
                            self.limit, key="eval.microbatches", shrink="data.eval_batch_size")
      # cache=None starts a recurrent state; later windows pass the state back.
      carry = jax.jit(self._split(k, True), in_shardings=(*shardings, None),
                      out_shardings=(rep, rep, None), **self._opts)
      self._steps[key] = (fresh, carry, k)
    return self._steps[key]

  def prepare(self, params, batch_size: int, seq_len: int, *, carry: bool) -> tuple[int, int]:
    """Compiles the fresh-state step and (carry=True) traces the carried one for a first and a
    later window, so that a shape problem shows before training; returns the micro-batch count
    and the compiled step's bytes per device (memory.step_bytes)."""
    fresh, carry_step, k = self._prepare(params, batch_size, seq_len)
    if carry:
      rows = mesh_lib.batch_sharding(self.mesh)
      spec = jax.ShapeDtypeStruct((batch_size, seq_len), jnp.int32, sharding=rows)
      mask = jax.ShapeDtypeStruct((batch_size, seq_len), jnp.bool_, sharding=rows)
      with jax.set_mesh(self.mesh):
        cache = jax.eval_shape(carry_step, params, spec, spec, mask, None)[2]
        carry_step.lower(params, spec, spec, mask, cache)
    return k, memory.step_bytes(fresh)

  def score(self, params, tokens: np.ndarray, batch_size: int, seq_len: int, *,
            carry: bool = False, max_windows: int = 0) -> tuple[float, int]:
    """Total nats and scored tokens over `tokens` (all of it unless max_windows > 0)."""
    rows = mesh_lib.batch_sharding(self.mesh)
    fresh, carry_step, _ = self._prepare(params, batch_size, seq_len)
    sums, cache = [], None
    with jax.set_mesh(self.mesh):
      for i, (x_BL, y_BL, mask_BL) in enumerate(
          data.eval_batches(tokens, batch_size, seq_len, carry_state=carry)):
        if max_windows and i >= max_windows:
          break
        x, y, m = (mesh_lib.global_batch(np.asarray(a), rows) for a in (x_BL, y_BL, mask_BL))
        if carry:
          nats, count, cache = carry_step(params, x, y, m, cache)
        else:
          nats, count = fresh(params, x, y, m)
        sums.append((nats, count))
    sums = mesh_lib.fetch(sums)
    return (float(np.sum([s[0] for s in sums], dtype=np.float64)),
            int(round(np.sum([s[1] for s in sums], dtype=np.float64))))
