"""The train step (one jitted function with explicit shardings) and the training loop."""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from inn_jax.train import memory
from inn_jax.train import mesh as mesh_lib


class NonFiniteLossError(FloatingPointError):
  """The loss, gradient or updated state became NaN/Inf; that update was not applied."""


def init_state(params, tx) -> dict:
  return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}


def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
                            if jnp.issubdtype(x.dtype, jnp.inexact)]))


def make_train_step(graphdef, rest, tx, lr_schedule, dropout_seed: int, microbatches: int = 1):
  """state, x_BL, y_BL -> state, metrics; a non-finite loss, gradient or new state leaves state
  unchanged.

  Dropout draws from fold_in(key(dropout_seed), step) (and the micro-batch index), so a resumed
  run repeats the same masks. `microbatches` > 1 accumulates the gradient over that many slices
  of the batch: the same update for a fraction of the activation memory.
  """
  key = jax.random.key(dropout_seed)

  def loss_fn(params, x_BL, y_BL, dropout_key):
    # A copy: nnx.merge reuses Variable objects, and these must belong to this trace.
    model = nnx.merge(graphdef, params, jax.tree.map(lambda x: x, rest))
    nnx.reseed(model, dropout=dropout_key)
    logits_BLV = model(x_BL)
    return optax.softmax_cross_entropy_with_integer_labels(logits_BLV, y_BL).mean()

  def loss_and_grads(params, x_BL, y_BL, step_key):
    if microbatches == 1:
      return jax.value_and_grad(loss_fn)(params, x_BL, y_BL, step_key)
    split = lambda a_BL: memory.split_rows(a_BL, microbatches)

    def accumulate(carry, xs):
      j, x_bL, y_bL = xs
      loss, grads = jax.value_and_grad(loss_fn)(params, x_bL, y_bL,
                                                jax.random.fold_in(step_key, j))
      return jax.tree.map(jnp.add, carry, (loss, grads)), None

    zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
    total, _ = jax.lax.scan(accumulate, zeros,
                            (jnp.arange(microbatches), split(x_BL), split(y_BL)))
    return jax.tree.map(lambda t: t / microbatches, total)

  def step(state, x_BL, y_BL):
    loss, grads = loss_and_grads(state["params"], x_BL, y_BL,
                                 jax.random.fold_in(key, state["step"]))
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    new = {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state,
           "step": state["step"] + 1}
    grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
    # The new state too: an update can overflow with a finite loss and gradient, and the state
    # a step returns is the one saved.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & _all_finite(new)
    new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
    lr = lr_schedule(state["step"]) if callable(lr_schedule) else jnp.asarray(lr_schedule)
    return new, {"loss": loss, "grad_norm": grad_norm, "lr": lr, "finite": finite}

  return step


def lower_train_step(step_fn, state, batch_shape, mesh):
  """Traces `step_fn` with the state laid out by mesh.state_shardings and batches split over the
  data axis."""
  state_sh = mesh_lib.state_shardings(state, mesh)
  rows = mesh_lib.batch_sharding(mesh)
  jitted = jax.jit(step_fn, in_shardings=(state_sh, rows, rows),
                   out_shardings=(state_sh, mesh_lib.replicated(mesh)), donate_argnums=0)
  tokens = jax.ShapeDtypeStruct(batch_shape, jnp.int32, sharding=rows)
  with jax.set_mesh(mesh):  # The model's activation constraints read the mesh while tracing.
    return jitted.lower(state, tokens, tokens)


def compile_train_step(step_fn, state, batch_shape, mesh, compiler_options=None):
  """The AOT-compiled train step (see lower_train_step)."""
  lowered = lower_train_step(step_fn, state, batch_shape, mesh)
  return lowered.compile(compiler_options=compiler_options)


def compile_fitting_step(make_step, state, batch_shape, mesh, microbatches: int, limit: float,
                         compiler_options=None):
  """(compiled step, micro-batches): see memory.fit; raises before any step runs."""
  return memory.fit(lambda k: compile_train_step(make_step(k), state, batch_shape, mesh,
                                                 compiler_options),
                    batch_shape, mesh.shape["data"], microbatches, limit,
                    key="train.microbatches", shrink="data.batch_size or data.seq_len")


def check_finite(history: list[tuple[int, dict]]):
  """Raises NonFiniteLossError at the first step whose loss, gradient or new state was not
  finite."""
  for step, m in history:
    if not bool(m["finite"]):
      loss, grad_norm = float(m["loss"]), float(m["grad_norm"])
      what = (f"loss became {loss} (gradient norm {grad_norm}) at step {step}"
              if not (math.isfinite(loss) and math.isfinite(grad_norm)) else
              f"the update of step {step} made the parameters or optimiser state non-finite "
              f"(loss {loss}, gradient norm {grad_norm})")
      raise NonFiniteLossError(
          f"{what}; stopped without applying that update or saving it. The last good "
          "checkpoint is in the workdir. Lower optim.lr, keep optim.clip_norm > 0, or use "
          "model.dtype='float32'.")


def fit(state, step_fn, stream, *, mesh, total_steps: int, train_cfg, level: str,
        logger, checkpoints, validate, meta: dict):
  """Runs steps meta['step'] .. total_steps - 1 (or to train_cfg.stop_at): logs, validates,
  saves; returns (state, meta).

  `validate(params)` -> mean nats per token on (part of) the valid split; the best is kept in
  best/. Nothing is saved or validated before the losses since the last check are finite.
  """
  rows = mesh_lib.batch_sharding(mesh)
  tokens_per_step = stream.batch_size * stream.seq_len
  history, t0 = [], time.time()
  end = min(total_steps, train_cfg.stop_at) if train_cfg.stop_at > 0 else total_steps

  def due(s, every):
    return every > 0 and s % every == 0 or s == end

  for s in range(meta["step"] + 1, end + 1):
    x_BL, y_BL = stream.batch(s - 1)
    state, metrics = step_fn(state, mesh_lib.global_batch(x_BL, rows),
                             mesh_lib.global_batch(y_BL, rows))
    history.append((s, metrics))
    if not (due(s, train_cfg.log_every) or due(s, train_cfg.eval_every)
            or due(s, train_cfg.save_every)):
      continue
    history = [(k, mesh_lib.fetch(m)) for k, m in history]  # Waits for the steps to finish.
    check_finite(history)
    elapsed = time.time() - t0
    n = len(history)
    loss = sum(float(m["loss"]) for _, m in history) / n
    meta.update(step=s, tokens_seen=meta["tokens_seen"] + n * tokens_per_step,
                train_time=meta["train_time"] + elapsed)
    row = {"loss": loss, "grad_norm": float(history[-1][1]["grad_norm"]),
           "lr": float(history[-1][1]["lr"]), "tokens_per_s": n * tokens_per_step / elapsed}
    if level in ("char", "byte"):
      row["bpc"] = loss / math.log(2.0)
    logger.write(s, row, "train")
    logger.progress(s, loss=loss, **({"bpc": row["bpc"]} if "bpc" in row else {}),
                    tok_s=row["tokens_per_s"])
    history = []
    if due(s, train_cfg.eval_every):
      nats = validate(state["params"])
      best = meta.get("best_valid")
      logger.write(s, {"nats": nats, **({"bpc": nats / math.log(2.0)}
                                         if level in ("char", "byte") else {})}, "valid")
      if best is None or nats < best:
        meta["best_valid"], meta["best_step"] = nats, s
        checkpoints.save(s, state, dict(meta), best=True)
    if due(s, train_cfg.save_every):
      checkpoints.save(s, state, dict(meta))
    t0 = time.time()
  return state, meta
