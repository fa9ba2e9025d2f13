"""One run from a config: check it, build everything, train (resuming) or evaluate, report."""

from __future__ import annotations

import json
import pathlib
import time

import jax
import numpy as np

from inn_jax import data
from inn_jax.models import count_params
from inn_jax.ops import scan
from inn_jax.train import (checkpoint, evaluate, host, loop, memory, model_summary,
                           preemption, profile, tracking, validate)
from inn_jax.train import mesh as mesh_lib
from inn_jax.train import step as step_lib
from inn_jax.train import workdir as workdir_lib
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


class Run:
  """Everything built from a checked config: corpus, mesh, model halves, optimiser, checkpoints.

  In train mode with checkpoints in the workdir the run resumes: its config must be the saved
  one (inn_jax/train/workdir.py), and the micro-batch counts are the ones it chose at its first
  start. Every check runs before anything is compiled.
  """

  def __init__(self, config, corpus=None):
    self.t_start = time.time()
    init_distributed(config.distributed)
    # Before any data or compilation; a corpus given needs no dataset name.
    validate.check_config(config, jax.device_count(), corpus_given=corpus is not None)
    self.config = config
    self.workdir = workdir_lib.Workdir(config.workdir)
    self.checkpoints = checkpoint.Checkpoints(config.workdir, keep=config.train.keep,
                                              async_save=config.train.async_save)
    has_checkpoints = self.checkpoints.latest_step() is not None
    self.resuming = config.mode == "train" and has_checkpoints
    saved = self.workdir.saved() if has_checkpoints else None
    self.saved_flat, self.resolved = saved or ({}, {})
    self.changes = {}
    if saved is not None:
      self._accept(workdir_lib.changes(self.saved_flat, config, model_only=not self.resuming))
    self.config = config = self._resumed_scan_method(config)
    self.corpus = corpus if corpus is not None else data.load_corpus(config.data)
    validate.check_corpus(config, self.corpus)
    self.corpus_sha256 = workdir_lib.corpus_sha256(self.corpus)
    self.corpus_record = workdir_lib.corpus_record(self.corpus, self.corpus_sha256)
    if has_checkpoints:
      self.workdir.check_vocab(self.corpus.vocab)
    saved_sha = self.resolved.get(workdir_lib.CORPUS_KEY)
    if self.resuming and saved_sha not in (None, self.corpus_sha256):
      self._accept({workdir_lib.CORPUS_KEY: (saved_sha, self.corpus_sha256)})
    self.mesh = mesh_lib.make_mesh(config.mesh)
    self.parts = step_lib.build(config, self.corpus.vocab.size, mesh=self.mesh)
    self.n_params = count_params(self.parts.model)
    self.model, self._summary = self.parts.model, None  # The summary's: see model_summary().
    state = self.parts.init_state()
    self.layout_sha256 = workdir_lib.layout_sha256(state)
    self._check_layout()
    self.shardings = mesh_lib.state_shardings(state, self.mesh)
    self.state = step_lib.place(state, self.shardings)
    self.compiler_options = config.compiler_options.to_dict() or None
    self.microbatches = {key: self._microbatches(key, batch_key)
                         for key, batch_key in (("train.microbatches", "batch_size"),
                                                ("eval.microbatches", "eval_batch_size"))}
    self.evaluator = evaluate.Evaluator(
        self.parts.graphdef_eval, self.parts.rest_eval, self.mesh, self.compiler_options,
        self.microbatches["eval.microbatches"],
        0.0 if self._saved_k("eval.microbatches") else self.memory_budget())

  def model_summary(self) -> dict:
    """Parameters per module and FLOPs per token (inn_jax.train.model_summary), computed once,
    before any step (the model's arrays are the state's until the first step donates it)."""
    if self._summary is None:
      self._summary = model_summary.summarize(self.config, self.corpus.vocab.size,
                                              parts=self.parts)
    return self._summary

  def resolved_now(self) -> dict:
    """What this run resolved, as HParams keys: micro-batch counts, scan method, sizes, the
    devices, and whether its malloc asks for huge pages (inn_jax.train.host)."""
    devices = jax.devices()
    return {**{f"resolved.{k}": v for k, v in self.microbatches.items()},
            "resolved.scan_method": scan_method(self.config.model) or "None",
            "resolved.vocab_size": self.corpus.vocab.size, "resolved.params": self.n_params,
            "resolved.device_kind": devices[0].device_kind,
            "resolved.device_count": len(devices),
            "resolved.malloc_huge_pages": host.malloc_huge_pages()}

  def _accept(self, changes: dict):
    """Refuses `changes` to a saved run unless train.allow_changes; eval mode: any change to the
    model."""
    if not changes:
      return
    w, text = self.workdir.path, workdir_lib.describe(changes)
    if not self.resuming:
      raise validate.ConfigError(
          f"{w} holds checkpoints of a different model: {text}. Evaluate with the run's config "
          f"({w}/{workdir_lib.CONFIG_FILE}) or use another --config.workdir.")
    if not self.config.train.allow_changes:
      raise validate.ConfigError(
          f"{w} holds a run whose config differs: {text}. A resumed run must be the same run: "
          f"run it with its saved config ({w}/{workdir_lib.CONFIG_FILE}), use another "
          "--config.workdir, or add --config.train.allow_changes=true to resume with these "
          f"changes (recorded in {w}/{workdir_lib.HISTORY_FILE}).")
    self.changes.update(changes)

  def _resumed_scan_method(self, config):
    """config, with model.scan_method="auto" read on resume as the path the run's first start
    resolved (saved in config.json) where that path runs here (scan.runs_here): "auto" may
    resolve otherwise on this machine or version, and the paths agree only to float rounding.
    Where it does not run (another device kind), "auto" resolves anew and the change is
    recorded in config_history.jsonl."""
    saved = self.resolved.get(workdir_lib.SCAN_KEY)
    if not (self.resuming and saved and config.model.get("scan_method") == "auto"):
      return config
    now = scan.auto_method()
    if saved == now:
      return config
    if not scan.runs_here(saved):
      self.changes[workdir_lib.SCAN_KEY] = (saved, now)
      return config
    config = config.copy_and_resolve_references()
    config.model.scan_method = saved
    return config

  def _check_layout(self):
    saved = self.resolved.get("state_layout_sha256")
    if saved not in (None, self.layout_sha256):
      model = {k: v for k, v in self.changes.items() if k.startswith("model.")}
      raise validate.ConfigError(
          f"the checkpoints in {self.workdir.path} hold a training state of another layout than "
          f"this config's model ({workdir_lib.describe(model) or 'saved by another version'}): "
          "they cannot be restored; use another --config.workdir or the saved model config.")

  def _saved_k(self, key: str) -> bool:
    """Whether `key`'s count is the one this resumed run chose at its first start."""
    return self.resuming and key in self.resolved

  def _microbatches(self, key: str, batch_key: str) -> int:
    section, _ = key.split(".")
    k = self.config[section].microbatches
    if self._saved_k(key):
      k = k or self.saved_flat[key]
      validate.check_microbatches(
          key, k, batch_key, self.config.data[batch_key], self.mesh.shape["data"],
          fix=f"this run's count (saved in {self.workdir.path}/{workdir_lib.CONFIG_FILE}) needs "
              f"a data-parallel size that divides it, or change the count with --config.{key}=N "
              "--config.train.allow_changes=true")
    return k

  def check_fits(self, key: str, k: int, need: int, shape):
    """A resumed run's saved count must still fit the device: else the sizes and the fix."""
    if not self._saved_k(key):
      return
    limit = self.memory_budget()
    if not limit or need <= limit:
      return
    effect = "the dropout masks change" if key.startswith("train") else "the same scores"
    raise memory.StepMemoryError(
        f"{key}: this run uses {k} micro-batch(es) of {shape[0] // k} x {shape[1]}, chosen at its "
        f"first start (saved in "
        f"{self.workdir.path}/{workdir_lib.CONFIG_FILE}); the step needs {need / memory.GIB:.2f} "
        f"GiB per device, but {limit / memory.GIB:.2f} GiB is available now. Free memory, or "
        f"resume with another count, --config.{key}=N --config.train.allow_changes=true "
        f"({effect}).")

  def memory_budget(self) -> float:
    """Bytes per device for the train step; the smallest of all processes, so that automatic
    micro-batching compiles the same program everywhere."""
    budget = memory.budget(jax.local_devices()[0])
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      budget = float(np.min(multihost_utils.process_allgather(np.float64(budget))))
    return budget

  def abstract_state(self):
    """The state's shapes and shardings (what a checkpoint restores into)."""
    return step_lib.abstract(self.state, self.shardings)

  def compile_train_step(self):
    """The compiled train step and its micro-batch count, before step 1."""
    key, shape = "train.microbatches", self.parts.shape
    compiled, k = loop.compile_fitting_step(
        self.parts.make_step, self.state, shape, self.mesh, self.microbatches[key],
        0.0 if self._saved_k(key) else self.memory_budget(), self.compiler_options)
    self.check_fits(key, k, memory.step_bytes(compiled), shape)
    self.microbatches[key] = k
    return compiled, k

  def prepare_eval(self) -> int:
    """Compiles (and traces, for carried state) every evaluation step the run will take."""
    d, key = self.config.data, "eval.microbatches"
    carry = True in evaluate.carry_modes(self.config.model.kind, self.config.eval.carry_state)
    k, need = self.evaluator.prepare(self.state["params"], d.eval_batch_size, d.seq_len,
                                     carry=carry and bool(self.config.eval.splits))
    self.check_fits(key, k, need, (d.eval_batch_size, d.seq_len))
    self.microbatches[key] = k
    return k

  def record(self, step: int):
    """config.json and vocab.json at a run's first start (and where a resumed workdir lacks
    them); the changes accepted on resuming at `step` in config_history.jsonl."""
    if self.resuming and self.saved_flat:
      self.workdir.record_changes(step, self.changes)
      return
    self.workdir.write(self.config, self.corpus.vocab, {
        **self.microbatches, workdir_lib.CORPUS_KEY: self.corpus_sha256,
        workdir_lib.SCAN_KEY: scan_method(self.config.model),
        workdir_lib.CORPUS_RECORD: self.corpus_record, "state_layout_sha256": self.layout_sha256})

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
        "dataset": self.config.data.name, workdir_lib.CORPUS_RECORD: self.corpus_record,
        "workdir": str(self.checkpoints.workdir),
        "scan_method": scan_method(self.config.model),
        "malloc_huge_pages": host.malloc_huge_pages(),
        "microbatches": {k.split(".")[0]: v for k, v in self.microbatches.items()},
        "flops_per_token": self.model_summary()["flops_per_token"],  # Matmuls: train/flops.py.
    }

  def write_json(self, name: str, obj: dict):
    if jax.process_index() == 0:
      path = pathlib.Path(self.config.workdir) / name
      path.write_text(json.dumps(obj, indent=2) + "\n")


def scan_method(model_cfg) -> str | None:
  """The selective-scan path the model ran ("auto" resolved); None for models without one."""
  method = model_cfg.get("scan_method")
  return scan.auto_method() if method == "auto" else method


def _resume_hint(command: str | None, what: str = "resume") -> str:
  return f"to {what}, run the same command" + (f": {command}" if command else "")


def train(config, command: str | None = None, *, corpus=None) -> dict:
  """Trains config.train.steps steps (resuming from the workdir), then writes results.json.

  `command` (train.py's command line) is named in the message of an error after step 1. A
  SIGTERM or SIGINT during training saves and returns {"stopped_at": step, "signal": name}.
  `corpus` (an inn_jax.data.Corpus) replaces the one config.data names.
  """
  r = Run(config, corpus)
  c, d = config, config.data
  restored = r.checkpoints.restore(r.abstract_state())
  meta = {"step": 0, "tokens_seen": 0, "train_time": 0.0}
  if restored is not None:
    r.state, meta = restored
  wandb = (lambda: tracking.WandbRun(c.log, c.workdir, name=c.name, resuming=r.resuming,
                                     config=tracking.hparams(c, {}))) if c.log.wandb else None
  logger = Logger(c.workdir, total_steps=c.train.steps, start_step=meta["step"],
                  tensorboard=c.log.tensorboard, progress=c.log.progress,
                  revalidate=loop.validation_pending(meta, c.train, c.train.steps), wandb=wandb)
  failed = True
  try:
    if restored is not None:
      logger.print(f"resumed from step {meta['step']} in {r.checkpoints.workdir}")
    logger.print(f"{c.name}: {c.model.kind}, {r.n_params:,} parameters, {r.corpus.level}-level "
                 f"vocabulary {r.corpus.vocab.size}, mesh {dict(r.mesh.shape)}")
    summary = r.model_summary()
    model_summary.write(c.workdir, summary)
    logger.print(model_summary.markdown(summary))
    t0 = time.time()
    compiled, k = r.compile_train_step()
    split = f", {k} micro-batches of {d.batch_size // k} x {d.seq_len}" if k > 1 else ""
    logger.print(f"train step compiled in {time.time() - t0:.1f}s{split}")
    t0 = time.time()
    k_eval = r.prepare_eval()
    split = f", {k_eval} micro-batches" if k_eval > 1 else ""
    logger.print(f"evaluation step compiled in {time.time() - t0:.1f}s{split}")
    r.record(meta["step"])
    stream = data.TrainStream(r.corpus.train, d.batch_size, d.seq_len, mode=d.stream,
                              seed=d.seed)
    validate_fn = lambda p: r.score(p, "valid", max_windows=c.train.eval_windows)["nats"]
    profiler = profile.StepProfiler(c.workdir, c.train.profile_steps, total_steps=c.train.steps,
                                    report=logger.print)
    with preemption.StopRequests() as stop, jax.set_mesh(r.mesh):
      fit = loop.Fit(r.state, compiled, stream, mesh=r.mesh, total_steps=c.train.steps,
                     train_cfg=c.train, level=r.corpus.level, logger=logger,
                     checkpoints=r.checkpoints, validate=validate_fn, meta=meta, stop=stop,
                     profiler=profiler, resume=_resume_hint(command))
      r.state, meta = fit.run()
    r.checkpoints.wait()  # Saves already started (all of finite states) complete.
    if meta["step"] < c.train.steps or fit.stopped_by:
      failed = False
      r.checkpoints.close()
      why = fit.stopped_by or "train.stop_at"
      logger.close()  # The bar first; every process prints the stop.
      print(f"stopped at step {meta['step']} ({why}; {c.train.steps} steps in all); run the "
            "same command to resume.")
      return {"stopped_at": meta["step"], **({"signal": why} if fit.stopped_by else {})}
    try:
      best = r.checkpoints.restore(r.abstract_state(), best=True)
      params = best[0]["params"] if best is not None else r.state["params"]
      results = r.results(r.report(params), meta)
    except Exception as e:
      e.add_note(f"Step {meta['step']} (the last) is saved in {r.checkpoints.workdir}; "
                 f"{_resume_hint(command, 'evaluate it')}.")
      raise
    r.write_json("results.json", results)
    logger.final(meta["step"], final_metrics(results), tracking.hparams(c, r.resolved_now()))
    failed = False
  finally:
    logger.close(failed)
  r.checkpoints.close()
  _print_summary(results)
  return results


def final_metrics(results: dict) -> dict:
  """results.json's headline numbers as {"final/<name>": value} (HParams metrics, W&B)."""
  keys = [k for k in results if k.endswith(("_bpc", "_ppl"))] + ["tokens_per_s", "best_step",
                                                                   "train_time_s"]
  return {f"final/{k}": float(results[k]) for k in keys
          if isinstance(results.get(k), (int, float)) and not isinstance(results[k], bool)}


def evaluate_best(config, *, corpus=None) -> dict:
  """--config.mode=eval: the workdir's best checkpoint (else its latest) on the eval splits."""
  r = Run(config, corpus)
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


def run(config, command: str | None = None, *, model=None, corpus=None) -> dict:
  """Trains (config.mode "train", resuming from the workdir) or evaluates ("eval") a run.

  Args:
    config: a trainer config (inn_jax.train.load(name or path), or configs/*.py's get_config()).
    command: the command line, named in the messages of errors after training began.
    model: a typed model config (INNConfig, ..., or a registered model's) to train instead of
      config.model; it is recorded in the workdir through its flat keys, so it must hold only
      values those keys can say (inn_jax.models.to_flat).
    corpus: an inn_jax.data.Corpus (e.g. inn_jax.data.corpus_from_arrays(...)) instead of the one
      config.data names; its sha256 is recorded, so a resumed run must be given the same ids.

  Returns results.json's dict (or {"stopped_at": step, ...} when stopped by a signal).
  """
  if model is not None:
    config = _with_model(config, model)
  if corpus is not None:
    config = config.copy_and_resolve_references()
    config.data.name = corpus.meta.get("name", "arrays")
  if config.mode == "train":
    return train(config, command, corpus=corpus)
  return evaluate_best(config, corpus=corpus)


def _with_model(config, model_config):
  """config with its model section replaced by the typed `model_config`'s flat keys."""
  from inn_jax import models
  kind = next((k for k, (_, c) in models.MODELS.items() if isinstance(model_config, c)), None)
  if kind is None:
    raise ValueError(f"run(model=...): {type(model_config).__name__} is not a registered model "
                     "config (inn_jax.models.register_model).")
  flat = {"kind": kind, **models.to_flat(model_config)}
  if models.typed_config(flat) != model_config:
    raise ValueError(f"run(model=...): {model_config} has values its flat keys cannot record "
                     f"(nested fields that are not command-line options); set them through "
                     f"the flat keys {sorted(flat)} or leave them at their defaults.")
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.model = models.model_config(kind, **{k: v for k, v in flat.items() if k != "kind"})
    # Not the base config's name alone: its model is not this run's.
    config.name = f"{config.name}+model={kind}"
  return config
