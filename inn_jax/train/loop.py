"""The train step (one jitted function with explicit shardings) and the training loop."""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from inn_jax.train import memory, profile
from inn_jax.train import mesh as mesh_lib
from inn_jax.train.checkpoint import CheckpointSaveError


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

  Named scopes, so that a profile reads like Algorithm 1 and its training: "grads" (forward and
  backward, the model's own scopes inside: embed, layer_k/memory, layer_k/communication, head,
  then "loss", the cross-entropy; the backward as transpose(jvp(...))), "optimizer" (the
  update and its application) and "finite_check" (gradient norm, the non-finite guard).
  """
  key = jax.random.key(dropout_seed)

  def loss_fn(params, x_BL, y_BL, dropout_key):
    # A copy: nnx.merge reuses Variable objects, and these must belong to this trace.
    model = nnx.merge(graphdef, params, jax.tree.map(lambda x: x, rest))
    nnx.reseed(model, dropout=dropout_key)
    logits_BLV = model(x_BL)
    with jax.named_scope("loss"):
      return optax.softmax_cross_entropy_with_integer_labels(logits_BLV, y_BL).mean()

  def loss_and_grads(params, x_BL, y_BL, step_key):
    with jax.named_scope("grads"):
      return accumulated_loss_and_grads(params, x_BL, y_BL, step_key)

  def accumulated_loss_and_grads(params, x_BL, y_BL, step_key):
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
    with jax.named_scope("optimizer"):
      updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
      new = {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state,
             "step": state["step"] + 1}
    with jax.named_scope("finite_check"):
      grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
      # The new state too: an update can overflow with a finite loss and gradient, and the
      # state a step returns is the one saved.
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


def eval_due(step: int, train_cfg, total_steps: int) -> bool:
  """Validation runs every eval_every steps and after the last one (not at a stop_at step: a
  stopped and resumed run validates where the uninterrupted one does)."""
  return _every(step, train_cfg.eval_every) or step == total_steps


def validation_pending(meta: dict, train_cfg, total_steps: int) -> bool:
  """Whether a run resumed with `meta` must first validate its step: it was due and not done
  (the state is saved before validating; a stop leaves it to the resumed run)."""
  s = meta["step"]
  return s > 0 and eval_due(s, train_cfg, total_steps) and meta.get("valid_step") != s


def _every(step: int, every: int) -> bool:
  return every > 0 and step % every == 0


class Fit:
  """The training loop over steps meta['step'] + 1 .. total_steps (or train_cfg.stop_at).

  Each step's metrics stay on the device until a log, eval or save step, where they are fetched
  and checked: nothing is saved or validated before the losses since the last check are finite.
  At a step where both are due, the state is saved before validating; the best state by
  `validate(params)` (mean nats per token) is kept in best/. A run that stops at a step due for
  validation (a signal, stop_at) saves it and leaves the validation to the resumed run, which
  validates such a step first (also when the run failed there).

  `stop.requested(step)` (inn_jax.train.preemption) ends the loop after that step with a save.
  `profiler` (inn_jax.train.profile.StepProfiler) traces the steps of train.profile_steps.
  Any exception saves the last good state, if it is not saved yet, and gets a note naming the
  step saved (or why none could be) and `resume` (how to resume); then it propagates.
  """

  def __init__(self, state, step_fn, stream, *, mesh, total_steps: int, train_cfg, level: str,
               logger, checkpoints, validate, meta: dict, stop=None, profiler=None,
               resume: str = "to resume, run the same command"):
    self.state, self.step_fn, self.stream, self.mesh = state, step_fn, stream, mesh
    self.profiler = profiler or profile.StepProfiler("")  # No steps: no trace.
    self.total, self.cfg, self.level, self.logger = total_steps, train_cfg, level, logger
    self.checkpoints, self.validate, self.meta, self.stop = checkpoints, validate, meta, stop
    self.resume = resume
    self.end = min(total_steps, train_cfg.stop_at) if train_cfg.stop_at > 0 else total_steps
    self.history, self.saved, self.t0 = [], meta["step"], time.time()  # Resumed: on disk.
    self.stopped_by = None  # The signal's name when a stop request ended the run.
    self.doing = "the start"  # What the loop does now, named in an error's note.

  def run(self):
    """Trains; returns (state, meta)."""
    try:
      if validation_pending(self.meta, self.cfg, self.total):
        self._validate(self.meta["step"])
      self._steps()
    except Exception as e:
      self.profiler.close()
      note = self._save_after(e)
      if note:
        e.add_note(note)
      raise
    self.profiler.close()  # A stop inside the window: the trace holds the steps taken.
    return self.state, self.meta

  def _steps(self):
    rows = mesh_lib.batch_sharding(self.mesh)
    self.t0 = time.time()
    for s in range(self.meta["step"] + 1, self.end + 1):
      self.doing = f"step {s}"
      x_BL, y_BL = self.stream.batch(s - 1)
      x_BL, y_BL = mesh_lib.global_batch(x_BL, rows), mesh_lib.global_batch(y_BL, rows)
      self.state, metrics = self.profiler.step(
          s, lambda: self.step_fn(self.state, x_BL, y_BL), pending=self.state)
      self.history.append((s, metrics))
      stop = self.stop.requested(s) if self.stop is not None else None
      # A run that stops here (a signal, train.stop_at) leaves the validation to its resumption.
      validate = eval_due(s, self.cfg, self.total) and not (stop or s == self.end < self.total)
      save = _every(s, self.cfg.save_every) or s == self.end or stop
      if not (save or validate or _every(s, self.cfg.log_every)):
        continue
      self._flush()
      if save:
        self._save()
      if validate:
        self._validate(s)
      if stop:
        self.stopped_by = stop
        return
      self.t0 = time.time()

  def _flush(self):
    """Fetches and checks the metrics of the steps since the last flush; logs their mean."""
    if not self.history:
      return
    history = [(k, mesh_lib.fetch(m)) for k, m in self.history]  # Waits for the steps.
    check_finite(history)
    self.history = []
    elapsed, n = time.time() - self.t0, len(history)
    tokens = n * self.stream.batch_size * self.stream.seq_len
    s, last = history[-1]
    self.meta.update(step=s, tokens_seen=self.meta["tokens_seen"] + tokens,
                     train_time=self.meta["train_time"] + elapsed)
    loss = sum(float(m["loss"]) for _, m in history) / n
    row = {"loss": loss, "grad_norm": float(last["grad_norm"]), "lr": float(last["lr"]),
           "tokens_per_s": tokens / elapsed}
    if self.level in ("char", "byte"):
      row["bpc"] = loss / math.log(2.0)
    self.logger.write(s, row, "train")
    self.logger.progress(s, loss=loss, **({"bpc": row["bpc"]} if "bpc" in row else {}),
                         tok_s=row["tokens_per_s"])

  def _save(self):
    self.checkpoints.save(self.meta["step"], self.state, dict(self.meta))
    self.saved = self.meta["step"]

  def _validate(self, s: int):
    self.doing = f"the validation at step {s}"
    nats = self.validate(self.state["params"])
    self.logger.write(s, {"nats": nats, **({"bpc": nats / math.log(2.0)}
                                           if self.level in ("char", "byte") else {})}, "valid")
    self.meta["valid_step"] = s
    best = self.meta.get("best_valid")
    if best is None or nats < best:
      self.meta["best_valid"], self.meta["best_step"] = nats, s
      self.checkpoints.save(s, self.state, dict(self.meta), best=True)

  def _save_after(self, error: Exception) -> str | None:
    """Saves the last good state after `error` if it is not saved yet, waits for the saves
    under way; returns the note."""
    if isinstance(error, CheckpointSaveError):
      return None  # Its message names the checkpoints kept and how to resume.
    nan = isinstance(error, NonFiniteLossError)
    try:
      if not nan:
        self._flush()
        if self.saved != self.meta["step"]:
          self._save()
      self.checkpoints.wait()
    except Exception as e:  # The state itself may be what failed (or a later step's NaN).
      return (f"The state after it could not be saved ({type(e).__name__}: {e}); the newest "
              f"checkpoint is step {self.checkpoints.latest_step()}; {self.resume}.")
    if nan:
      return (f"Nothing was saved after it; the newest checkpoint is step "
              f"{self.checkpoints.latest_step()}: to resume from it with, e.g., a lower optim.lr, "
              f"add --config.train.allow_changes=true ({self.resume}).")
    return (f"It happened in {self.doing}; saved step {self.saved} in {self.checkpoints.workdir}; "
            f"{self.resume}.")
