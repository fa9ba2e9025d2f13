"""Metrics to JSON lines, TensorBoard and (optionally) W&B, and a progress bar; only process 0
writes."""

from __future__ import annotations

import json
import math
import pathlib
import time

import importlib.util

import jax

from inn_jax.train import tracking

EXTRA = 'pip install "inn_jax[train]"'  # tensorboardX, tqdm, matplotlib.

LN2 = math.log(2.0)


def per_token(nats: float, level: str) -> dict:
  """Mean nats per token -> the split's headline numbers: BPC (characters, bytes) and PPL."""
  out = {"nats": nats, "ppl": math.exp(min(nats, 700.0))}
  if level in ("char", "byte"):
    out["bpc"] = nats / LN2
  return out


def truncate(path: pathlib.Path, step: int, *, valid_at_step: bool = True):
  """Keeps the rows of metrics.jsonl up to `step` (without its valid rows if not
  valid_at_step): a resumed run writes the later ones again. A torn last line is dropped."""
  if not path.exists():
    return
  kept = []
  for line in path.read_text(encoding="utf-8").splitlines():
    try:
      row = json.loads(line)
    except json.JSONDecodeError:  # The line a killed run was writing.
      continue
    if row["step"] < step or row["step"] == step and (valid_at_step or row["split"] != "valid"):
      kept.append(line + "\n")
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text("".join(kept), encoding="utf-8")
  tmp.replace(path)


class Logger:
  """`write(step, metrics, split)` appends {"step", "split", **metrics} to metrics.jsonl and
  TensorBoard as split/name; `progress(step, **postfix)` moves the bar.

  A run resumed at `start_step` first drops the rows past it (and its valid rows when
  `revalidate`): metrics.jsonl then holds each step once. TensorBoard hides its later events.
  `wandb` (process 0: a callable making an inn_jax.train.tracking.WandbRun, called once the
  workdir exists) gets the same scalars; `final` writes the end-of-run HParams and summary.
  """

  def __init__(self, workdir, *, total_steps: int, start_step: int = 0,
               tensorboard: bool = True, progress: bool = True, revalidate: bool = False,
               wandb=None):
    self.main = jax.process_index() == 0
    self.workdir = pathlib.Path(workdir)
    self.jsonl = self.tb = self.bar = self.wandb = None
    if not self.main:
      return
    self.workdir.mkdir(parents=True, exist_ok=True)
    truncate(self.workdir / "metrics.jsonl", start_step, valid_at_step=not revalidate)
    self.jsonl = open(self.workdir / "metrics.jsonl", "a", encoding="utf-8")
    notes = []
    if tensorboard and importlib.util.find_spec("tensorboardX") is None:
      notes.append(f"log.tensorboard: tensorboardX is not installed, so no TensorBoard logs "
                   f"({EXTRA}); metrics.jsonl has every number.")
    elif tensorboard:
      from tensorboardX import SummaryWriter  # Imported here: only the writer needs it.
      # purge_step: TensorBoard discards the events of the steps written again.
      self.tb = SummaryWriter(str(self.workdir / "tb"), purge_step=start_step + 1)
    if progress and importlib.util.find_spec("tqdm") is not None:
      import tqdm
      self.bar = tqdm.tqdm(total=total_steps, initial=start_step, unit="step",
                           dynamic_ncols=True, smoothing=0.1)
    for note in notes:
      self.print(note)
    self.start = time.time()
    self.wandb = wandb() if wandb is not None else None

  def write(self, step: int, metrics: dict, split: str = "train"):
    if not self.main:
      return
    row = {"step": int(step), "split": split, "time": round(time.time() - self.start, 3),
           **{k: float(v) for k, v in metrics.items()}}
    self.jsonl.write(json.dumps(row) + "\n")
    self.jsonl.flush()
    if self.tb is not None:
      for k, v in metrics.items():
        self.tb.add_scalar(f"{split}/{k}", float(v), int(step))
    if self.wandb is not None:
      self.wandb.log(step, metrics, split)

  def final(self, step: int, metrics: dict, hparams: dict):
    """The run's final `metrics` ({tag: number}) with its `hparams` (tracking.hparams): the
    HParams tab of TensorBoard, the W&B run's summary."""
    if self.tb is not None:
      tracking.write_hparams(self.tb, hparams, metrics, step)
    if self.wandb is not None:
      self.wandb.update_config(hparams)
      self.wandb.summary(metrics)

  def progress(self, step: int, **postfix):
    if self.bar is not None:
      self.bar.update(step - self.bar.n)
      self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

  def print(self, text: str):
    if self.main:
      (self.bar.write if self.bar is not None else print)(text)

  def close(self, failed: bool = False):
    """Closes every writer (again: nothing); `failed` marks the W&B run failed."""
    if self.bar is not None:
      self.bar.close()
    if self.tb is not None:
      self.tb.close()
    if self.jsonl is not None:
      self.jsonl.close()
    if self.wandb is not None:
      self.wandb.close(failed)
    self.bar = self.tb = self.jsonl = self.wandb = None
