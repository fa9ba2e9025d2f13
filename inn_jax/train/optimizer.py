"""AdamW with PyTorch's OneCycleLR schedule, global-norm clipping and a weight-decay mask."""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from inn_jax.sharding import NeuronParam

SCHEDULES = ("one_cycle", "constant")
DECAY_MASKS = ("matrices", "all")
# Path keys of parameters that are never decayed under decay_mask="matrices".
_NO_DECAY = re.compile(r"norm|table|embed_|bias|A_log|pos_")


def one_cycle(total_steps: int, peak: float, *, pct_start: float = 0.3, div_factor: float = 25.0,
              final_div_factor: float = 1e4, start: float | None = None,
              middle: float | None = None):
  """torch.optim.lr_scheduler.OneCycleLR (anneal "cos", three_phase=False) as f(count).

  Without start/middle: the learning rate, max/div_factor -> max (at step 0.3 T - 1) ->
  max/div_factor/final_div_factor (at step T - 1). With start/middle: a value that goes
  start -> middle -> start over the same two phases, as OneCycleLR cycles momentum.
  Past step T - 1 (where PyTorch raises) the last value holds.
  """
  if start is None:
    start, middle = peak / div_factor, peak
    end = start / final_div_factor
  else:
    end = start
  phase1_end = float(pct_start * total_steps) - 1.0
  phase2_end = float(total_steps - 1)

  def anneal(a, b, left):
    # PyTorch's b + (a - b) / 2 (cos(pi pct) + 1) written with left = 1 - pct, the fraction of
    # the phase still to go, which float32 holds exactly enough near the phase's end.
    return b + (a - b) * jnp.square(jnp.sin(math.pi / 2 * left))

  def schedule(count):
    step = jnp.asarray(count, jnp.float32)
    left1 = (phase1_end - step) / phase1_end if phase1_end > 0 else jnp.zeros_like(step)
    left2 = jnp.clip((phase2_end - step) / max(phase2_end - phase1_end, 1e-12), 0.0, 1.0)
    return jnp.where(step <= phase1_end, anneal(start, middle, left1),
                     anneal(middle, end, left2))

  return schedule


def schedules(cfg, total_steps: int):
  """(learning rate, beta1) as functions of the update count."""
  if cfg.schedule == "one_cycle":
    kw = dict(pct_start=cfg.pct_start, div_factor=cfg.div_factor,
              final_div_factor=cfg.final_div_factor)
    lr = one_cycle(total_steps, cfg.lr, **kw)
    b1 = (one_cycle(total_steps, cfg.lr, start=cfg.max_momentum, middle=cfg.base_momentum, **kw)
          if cfg.cycle_momentum else cfg.b1)
    return lr, b1
  return cfg.lr, cfg.b1


def decay_mask(params, mode: str = "matrices"):
  """True where weight decay applies: "all", or matrices that are not norms or embeddings. A
  per-neuron parameter counts as its per-neuron slice (a neuron's D vector is no matrix). The
  mask mirrors `params`, Variables included."""
  if mode not in DECAY_MASKS:
    raise ValueError(f"optim.decay_mask={mode!r} is not one of {DECAY_MASKS}.")

  def decays(path, x):
    if mode == "all":
      return True
    keys = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
    ndim = x.ndim - (1 if isinstance(x, NeuronParam) else 0)
    return ndim >= 2 and not any(_NO_DECAY.search(k) for k in keys)

  def mark(path, x):
    flag = decays(path, x)
    return x.replace(flag) if isinstance(x, nnx.Variable) else flag

  return jax.tree_util.tree_map_with_path(mark, params,
                                          is_leaf=lambda x: isinstance(x, nnx.Variable))


def make_optimizer(cfg, total_steps: int) -> optax.GradientTransformation:
  """clip_by_global_norm -> AdamW(lr, beta1 scheduled) with the decay mask of cfg."""
  if cfg.schedule not in SCHEDULES:
    raise ValueError(f"optim.schedule={cfg.schedule!r} is not one of {SCHEDULES}.")
  lr, b1 = schedules(cfg, total_steps)
  adamw = optax.inject_hyperparams(optax.adamw, static_args=("mask",))(
      learning_rate=lr, b1=b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
      mask=lambda params: decay_mask(params, cfg.decay_mask))
  clip = optax.clip_by_global_norm(cfg.clip_norm) if cfg.clip_norm > 0 else optax.identity()
  return optax.chain(clip, adamw)
