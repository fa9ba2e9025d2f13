"""One run from a config: check it, build everything, train (resuming) or evaluate, report."""

from __future__ import annotations

import json
import pathlib
import time

import jax
import numpy as np
from flax import nnx

from inn_jax import data
from inn_jax.models import build_model, count_params
from inn_jax.train import checkpoint, evaluate, loop, memory, optimizer, validate
from inn_jax.train import mesh as mesh_lib
from inn_jax.train.log import Logger, per_token


def init_distributed(cfg):
  """jax.distributed.initialize when config.distributed.enabled; empty fields auto-detect
  (SLURM, Open MPI, Cloud TPU)."""
  if not cfg.enabled:
    return
  kw = {}
  if cfg.coordinator_address:
    kw.update(coordinator_address=cfg.coordinator_address, num_processes=cfg.num_processes,
              process_id=cfg.process_id)
  if cfg.local_device_ids:
    kw["local_device_ids"] = [int(i) for i in str(cfg.local_device_ids).split(",")]
  jax.distributed.initialize(**kw)


def _put(tree, shardings):
  if jax.process_count() == 1:
    return jax.device_put(tree, shardings)
  return jax.tree.map(lambda x, s: mesh_lib.global_batch(np.asarray(x), s), tree, shardings)


class Run:
  """Everything built from a checked config: corpus, mesh, model halves, optimiser, checkpoints."""

  def __init__(self, config):
    self.t_start = time.time()
    init_distributed(config.distributed)
    validate.check_config(config, jax.device_count())  # Before any data or compilation.
    self.config, self.corpus = config, data.load_corpus(config.data)
    validate.check_corpus(config, self.corpus)
    self.mesh = mesh_lib.make_mesh(config.mesh)
    model = build_model(config.model, self.corpus.vocab.size,
                        nnx.Rngs(params=config.seed, dropout=config.seed + 1))
    self.n_params = count_params(model)
    model.train()
    self.graphdef_train, params, self.rest = nnx.split(model, nnx.Param, ...)
    model.eval()
    self.graphdef_eval, _, rest_eval = nnx.split(model, nnx.Param, ...)
    self.tx = optimizer.make_optimizer(config.optim, config.train.steps)
    state = loop.init_state(params, self.tx)
    self.shardings = mesh_lib.state_shardings(state, self.mesh)
    self.state = _put(state, self.shardings)
    self.compiler_options = config.compiler_options.to_dict() or None
    self.evaluator = evaluate.Evaluator(self.graphdef_eval, rest_eval, self.mesh,
                                        self.compiler_options, config.eval.microbatches,
                                        self.memory_budget())
    self.checkpoints = checkpoint.Checkpoints(config.workdir, keep=config.train.keep,
                                              async_save=config.train.async_save)
    self.checkpoints.check_config({**config.to_dict(), "vocab_size": self.corpus.vocab.size},
                                  write=config.mode == "train")

  def memory_budget(self) -> float:
    """Bytes per device for the train step; the smallest of all processes, so that automatic
    micro-batching compiles the same program everywhere."""
    budget = memory.budget(jax.local_devices()[0])
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      budget = float(np.min(multihost_utils.process_allgather(np.float64(budget))))
    return budget

  def abstract_state(self):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        self.state, self.shardings)

  def score(self, params, split: str, *, carry: bool = False, max_windows: int = 0) -> dict:
    d = self.config.data
    nats, tokens = self.evaluator.score(params, getattr(self.corpus, split), d.eval_batch_size,
                                        d.seq_len, carry=carry, max_windows=max_windows)
    return {**per_token(nats / tokens, self.corpus.level), "tokens": tokens}

  def report(self, params) -> dict:
    """Each eval split scored whole, fresh state per window and (recurrent models) carried."""
    modes = evaluate.carry_modes(self.config.model.kind, self.config.eval.carry_state)
    return {split: {("carried" if c else "reset"): self.score(params, split, carry=c)
                    for c in modes} for split in self.config.eval.splits}

  def results(self, scores: dict, meta: dict) -> dict:
    devices = jax.devices()
    headline = {f"{split}_{k}": next(iter(by_mode.values()))[k]
                for split, by_mode in scores.items() for k in ("bpc", "ppl")
                if k in next(iter(by_mode.values()))}
    return {
        "config": self.config.name, "model": self.config.model.kind, **headline,
        "scores": scores, "params": self.n_params, "steps": meta["step"],
        "tokens_seen": meta["tokens_seen"], "best_step": meta.get("best_step"),
        "train_time_s": round(meta["train_time"], 2),
        "wall_time_s": round(time.time() - self.t_start, 2),
        "tokens_per_s": meta["tokens_seen"] / meta["train_time"] if meta["train_time"] else None,
        "device_kind": devices[0].device_kind, "device_count": len(devices),
        "process_count": jax.process_count(), "level": self.corpus.level,
        "dataset": self.config.data.name, "workdir": str(self.checkpoints.workdir),
    }

  def write_json(self, name: str, obj: dict):
    if jax.process_index() == 0:
      path = pathlib.Path(self.config.workdir) / name
      path.write_text(json.dumps(obj, indent=2) + "\n")


def train(config) -> dict:
  """Trains config.train.steps steps (resuming from the workdir), then writes results.json."""
  r = Run(config)
  c, d = config, config.data
  restored = r.checkpoints.restore(r.abstract_state())
  meta = {"step": 0, "tokens_seen": 0, "train_time": 0.0}
  if restored is not None:
    r.state, meta = restored
  logger = Logger(c.workdir, total_steps=c.train.steps, start_step=meta["step"],
                  tensorboard=c.log.tensorboard, progress=c.log.progress)
  if restored is not None:
    logger.print(f"resumed from step {meta['step']} in {r.checkpoints.workdir}")
  logger.print(f"{c.name}: {c.model.kind}, {r.n_params:,} parameters, {r.corpus.level}-level "
               f"vocabulary {r.corpus.vocab.size}, mesh {dict(r.mesh.shape)}")
  stream = data.TrainStream(r.corpus.train, d.batch_size, d.seq_len, mode=d.stream, seed=d.seed)
  lr, _ = optimizer.schedules(c.optim, c.train.steps)
  make_step = lambda k: loop.make_train_step(r.graphdef_train, r.rest, r.tx, lr, c.seed + 1, k)
  t0 = time.time()
  compiled, k = loop.compile_fitting_step(make_step, r.state, (d.batch_size, d.seq_len), r.mesh,
                                          c.train.microbatches, r.memory_budget(),
                                          r.compiler_options)
  split = f", {k} micro-batches of {d.batch_size // k} x {d.seq_len}" if k > 1 else ""
  logger.print(f"train step compiled in {time.time() - t0:.1f}s{split}")
  validate_fn = lambda params: r.score(params, "valid", max_windows=c.train.eval_windows)["nats"]
  try:
    with jax.set_mesh(r.mesh):
      r.state, meta = loop.fit(r.state, compiled, stream, mesh=r.mesh, total_steps=c.train.steps,
                               train_cfg=c.train, level=r.corpus.level, logger=logger,
                               checkpoints=r.checkpoints, validate=validate_fn, meta=meta)
  finally:
    r.checkpoints.wait()  # Saves already started (all of finite states) complete.
    logger.close()
  if meta["step"] < c.train.steps:
    r.checkpoints.close()
    print(f"stopped at step {meta['step']} of {c.train.steps} (train.stop_at); run the same "
          "command again to resume.")
    return {"stopped_at": meta["step"]}
  best = r.checkpoints.restore(r.abstract_state(), best=True)
  params = best[0]["params"] if best is not None else r.state["params"]
  results = r.results(r.report(params), meta)
  r.write_json("results.json", results)
  r.checkpoints.close()
  _print_summary(results)
  return results


def evaluate_best(config) -> dict:
  """--config.mode=eval: the workdir's best checkpoint (else its latest) on the eval splits."""
  r = Run(config)
  restored = (r.checkpoints.restore(r.abstract_state(), best=True)
              or r.checkpoints.restore(r.abstract_state()))
  if restored is None:
    raise FileNotFoundError(f"no checkpoint in {r.checkpoints.workdir}; train first "
                            "(--config.mode=train) or set --config.workdir.")
  state, meta = restored
  results = r.results(r.report(state["params"]), meta)
  r.write_json("eval_results.json", results)
  r.checkpoints.close()
  _print_summary(results)
  return results


def _print_summary(results: dict):
  if jax.process_index() != 0:
    return
  lines = [f"{results['config']}: {results['params']:,} params, {results['steps']} steps, "
           f"{results['tokens_seen']:,} tokens, {results['wall_time_s']:.0f}s wall"]
  for split, by_mode in results["scores"].items():
    for mode, s in by_mode.items():
      metric = f"BPC {s['bpc']:.4f}" if "bpc" in s else f"PPL {s['ppl']:.2f}"
      lines.append(f"  {split:5s} {mode:7s} {metric}  ({s['tokens']:,} tokens)")
  print("\n".join(lines))


def run(config) -> dict:
  return train(config) if config.mode == "train" else evaluate_best(config)
