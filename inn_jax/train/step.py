"""One definition of what a training run steps: model, optimizer, state and train step.

    parts = step.build(config, vocab_size)          # the model as config.model builds it
    state = parts.placed_state()                    # on parts.mesh, as the trainer lays it out
    compiled = loop.compile_train_step(parts.make_step(1), state, parts.shape, parts.mesh)

The trainer (runner.Run), the model summary's FLOPs (model_summary), the roofline
(inn_jax.roofline), `inn_jax.bench` and `benchmarks/gpu_scan.py` all build through `build`, so
every count and every timing is of the step training runs: the same model init (params seed
config.seed, dropout seed config.seed + 1), optimizer (optimizer.make_optimizer), learning-rate
schedule, dropout keys, finite check and micro-batching (loop.make_train_step).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from flax import nnx

from inn_jax.models import build_model
from inn_jax.train import loop, optimizer
from inn_jax.train import mesh as mesh_lib


@dataclasses.dataclass
class TrainParts:
  """What a run builds before it compiles. `model` is left in eval mode; `graphdef`/`rest` are
  its train-mode split (dropout on), `graphdef_eval`/`rest_eval` its eval-mode split."""
  config: object
  model: nnx.Module
  mesh: jax.sharding.Mesh
  graphdef: object
  params: object  # nnx.State of the model's nnx.Param (host arrays as initialised)
  rest: object
  graphdef_eval: object
  rest_eval: object
  tx: object
  lr: object  # the learning-rate schedule (step -> lr)

  @property
  def shape(self) -> tuple[int, int]:
    """The train batch (data.batch_size, data.seq_len)."""
    return (self.config.data.batch_size, self.config.data.seq_len)

  def make_step(self, microbatches: int = 1):
    """The train step, state, x_BL, y_BL -> state, metrics (loop.make_train_step)."""
    return loop.make_train_step(self.graphdef, self.rest, self.tx, self.lr,
                                self.config.seed + 1, microbatches)

  def forward(self, params, tokens_BL):
    """Eval-mode logits_BLV of `params` (the state's "params")."""
    return nnx.merge(self.graphdef_eval, params, self.rest_eval)(tokens_BL)

  def init_state(self) -> dict:
    """{"params", "opt_state", "step"} on the host (loop.init_state)."""
    return loop.init_state(self.params, self.tx)

  def abstract_state(self) -> dict:
    """The state as jax.ShapeDtypeStructs with the trainer's shardings: nothing allocated."""
    state = jax.eval_shape(lambda p: loop.init_state(p, self.tx), self.params)
    return abstract(state, mesh_lib.state_shardings(state, self.mesh))

  def placed_state(self, state: dict | None = None) -> dict:
    """`state` (default: init_state()) laid out on the mesh by mesh.state_shardings."""
    state = self.init_state() if state is None else state
    return place(state, mesh_lib.state_shardings(state, self.mesh))

  def random_batch(self, vocab_size: int, seed: int = 0):
    """(x_BL, y_BL): uniform random token ids of the train batch's shape, laid out as the
    trainer lays out a batch (rows over the data axes): what benchmarks time a step on."""
    tokens = np.random.default_rng(seed).integers(0, vocab_size, (self.shape[0],
                                                                  self.shape[1] + 1))
    rows = mesh_lib.batch_sharding(self.mesh)
    return tuple(mesh_lib.global_batch(t.astype(np.int32), rows)
                 for t in (tokens[:, :-1], tokens[:, 1:]))


def place(tree, shardings):
  """`tree` of host arrays laid out by `shardings`; with several processes each one passes the
  whole (identical) tree and places its own shards (mesh.global_batch)."""
  if jax.process_count() == 1:
    return jax.device_put(tree, shardings)
  return jax.tree.map(lambda x, s: mesh_lib.global_batch(np.asarray(x), s), tree, shardings)


def abstract(tree, shardings):
  """`tree`'s shapes and dtypes with `shardings`, as jax.ShapeDtypeStructs (what a checkpoint
  restores into)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def build(config, vocab_size: int, *, model: nnx.Module | None = None,
          mesh: jax.sharding.Mesh | None = None) -> TrainParts:
  """The TrainParts of `config` (model, optimizer, schedule) for a vocabulary of `vocab_size`.

  model: an already built model to train (default: build_model(config.model, ...) with params
  seed config.seed and dropout seed config.seed + 1). mesh: default mesh.make_mesh(config.mesh).
  """
  mesh = mesh if mesh is not None else mesh_lib.make_mesh(config.mesh)
  if model is None:
    model = build_model(config.model, vocab_size,
                        nnx.Rngs(params=config.seed, dropout=config.seed + 1))
  model.train()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  model.eval()
  graphdef_eval, _, rest_eval = nnx.split(model, nnx.Param, ...)
  tx = optimizer.make_optimizer(config.optim, config.train.steps)
  lr, _ = optimizer.schedules(config.optim, config.train.steps)
  return TrainParts(config=config, model=model, mesh=mesh, graphdef=graphdef, params=params,
                    rest=rest, graphdef_eval=graphdef_eval, rest_eval=rest_eval, tx=tx, lr=lr)
