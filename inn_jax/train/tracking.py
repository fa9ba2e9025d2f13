"""Run tracking beside metrics.jsonl: TensorBoard HParams and an optional Weights & Biases run.

HParams: at the end of a run, the resolved config (flattened: `optim.lr`, `model.n_neurons`, ...,
with the micro-batch counts chosen and the scan method resolved) and the final metrics
(`final/valid_bpc`, ...) go into the run's own tb/ folder (tensorboardX's add_hparams would make
a timestamped sub-folder: a second run in the HParams tab), so runs under one
`tensorboard --logdir` compare in the HParams tab.

W&B (`log.wandb=true`, pip install -e ".[wandb]"): wandb is imported only then. It logs the
scalars TensorBoard gets, at the same steps, the resolved config, and the final metrics as the
run's summary. The run id is kept in <workdir>/wandb_run.json: a resumed run continues the same
W&B run (steps W&B already holds from before the checkpoint are not logged twice: W&B keeps a
run's steps increasing). WANDB_MODE=offline (or `wandb offline`) keeps everything on the
machine, in WANDB_DIR (default: the workdir); `wandb sync` uploads it later.
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import string

from inn_jax.train import workdir as workdir_lib

WANDB_FILE = "wandb_run.json"
INSTALL = 'pip install -e ".[wandb]"'


def hparams(config, resolved: dict) -> dict:
  """The config flattened, `resolved` ({key: value}) over it, as HParams values: str, bool,
  int, float (None as "None", lists as JSON)."""
  flat = {**workdir_lib.flatten(workdir_lib.as_json(config)), **resolved}
  return {k: v if isinstance(v, (str, bool, int, float)) else
          "None" if v is None else json.dumps(v) for k, v in sorted(flat.items())}


def write_hparams(writer, values: dict, metrics: dict, step: int):
  """The HParams plugin's experiment, session start and end into tensorboardX `writer`'s own
  folder, and `metrics` as scalars at `step` (the plugin reads a session's metrics by tag)."""
  from tensorboardX.summary import hparams as hparams_summaries
  experiment, start, end = hparams_summaries(values, metrics)
  for summary in (experiment, start, end):
    writer.file_writer.add_summary(summary)
  for tag, value in metrics.items():
    writer.add_scalar(tag, float(value), int(step))
  writer.flush()


def _new_id() -> str:
  """A W&B run id: 8 characters of [a-z0-9], as W&B makes them."""
  return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


class WandbRun:
  """One W&B run for one training run (process 0 only); `log`, `summary`, `close`."""

  def __init__(self, log_cfg, workdir, *, name: str, config: dict, resuming: bool):
    try:
      import wandb
    except ImportError:
      raise ValueError(f"config.log.wandb: true needs the wandb package, which is not "
                       f"installed: {INSTALL}, or set --config.log.wandb=false.") from None
    self.path = pathlib.Path(workdir) / WANDB_FILE
    saved = json.loads(self.path.read_text()) if resuming and self.path.is_file() else None
    # A run that starts afresh (no checkpoint) is a new W&B run: its steps start at 1 again.
    run_id = saved["id"] if saved else _new_id()
    kw = {} if os.environ.get("WANDB_DIR") else {"dir": str(workdir)}
    self.run = wandb.init(project=log_cfg.wandb_project, entity=log_cfg.wandb_entity or None,
                          name=log_cfg.wandb_name or name, id=run_id, resume="allow", **kw)
    self.run.config.update(config, allow_val_change=True)  # A resumed run's accepted changes.
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self.path.write_text(json.dumps({"id": run_id, "project": log_cfg.wandb_project,
                                     "entity": log_cfg.wandb_entity}) + "\n")

  def log(self, step: int, metrics: dict, split: str):
    self.run.log({f"{split}/{k}": float(v) for k, v in metrics.items()}, step=int(step))

  def update_config(self, values: dict):
    self.run.config.update(values, allow_val_change=True)

  def summary(self, metrics: dict):
    self.run.summary.update({k: float(v) for k, v in metrics.items()})

  def close(self, failed: bool = False):
    self.run.finish(exit_code=1 if failed else 0)
