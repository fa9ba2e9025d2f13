"""Run tracking: TensorBoard HParams in the run's own tb/ folder, the model summary and FLOPs in
results.json, and a real Weights & Biases run in offline mode (nothing leaves the machine) that a
resumed run continues, read back from its .wandb file."""

import json
import math
import pathlib
import struct
import sys

import pytest

import train
from inn_jax.train import runner, tracking
from tests import train_cli


def tfrecords(path: pathlib.Path):
  """The records of a TFRecord file (TensorBoard's event files): length, its CRC, data, CRC."""
  raw, pos = path.read_bytes(), 0
  while pos < len(raw):
    (length,) = struct.unpack("<Q", raw[pos:pos + 8])
    yield raw[pos + 12:pos + 12 + length]
    pos += 12 + length + 4


def tb_values(folder: pathlib.Path) -> list:
  """(step, Summary.Value) of every event file directly in `folder`."""
  from tensorboardX.proto import event_pb2
  out = []
  for path in sorted(folder.glob("events.out.tfevents.*")):
    for record in tfrecords(path):
      event = event_pb2.Event()
      event.ParseFromString(record)
      out += [(event.step, v) for v in event.summary.value]
  return out


def test_hparams_summary_and_flops(tmp_path):
  path = train_cli.config_file(tmp_path, steps=3, mesh_data=1)
  config = train_cli.load(path, log__tensorboard="true")
  results = runner.train(config)
  work = pathlib.Path(config.workdir)
  tb = work / "tb"
  assert not [p for p in tb.iterdir() if p.is_dir()]  # No timestamped sub-folder.
  from tensorboardX.proto import plugin_hparams_pb2
  plugin = {}
  scalars = {}
  for step, v in tb_values(tb):
    if v.metadata.plugin_data.plugin_name == "hparams":
      data = plugin_hparams_pb2.HParamsPluginData()
      data.ParseFromString(v.metadata.plugin_data.content)
      plugin[v.tag] = data
    elif v.HasField("simple_value"):
      scalars[(v.tag, step)] = v.simple_value
  assert set(plugin) == {"_hparams_/experiment", "_hparams_/session_start_info",
                         "_hparams_/session_end_info"}
  hp = plugin["_hparams_/session_start_info"].session_start_info.hparams
  assert hp["optim.lr"].number_value == pytest.approx(config.optim.lr)
  assert hp["model.kind"].string_value == "inn"
  assert hp["model.n_neurons"].number_value == config.model.n_neurons
  assert hp["data.split"].string_value == json.dumps(list(config.data.split))
  assert hp["resolved.train.microbatches"].number_value == results["microbatches"]["train"]
  assert hp["resolved.scan_method"].string_value == results["scan_method"]
  metrics = {m.name.tag for m in plugin["_hparams_/experiment"].experiment.metric_infos}
  assert {"final/valid_bpc", "final/valid_ppl", "final/tokens_per_s"} <= metrics
  assert scalars[("final/valid_bpc", 3)] == pytest.approx(results["valid_bpc"], rel=1e-6)
  assert scalars[("train/loss", 3)] == pytest.approx(json.loads(
      (work / "metrics.jsonl").read_text().splitlines()[2])["loss"], rel=1e-6)
  # The summary the run wrote at its start; its FLOPs are results.json's.
  summary = json.loads((work / "summary.json").read_text())
  assert summary["params"]["total"] == results["params"]
  assert results["flops_per_token"] == summary["flops_per_token"]
  assert results["flops_per_token"]["train"] >= results["flops_per_token"]["forward"] > 0
  assert "| **total** |" in (work / "summary.md").read_text()


def test_hparams_values_are_scalars_or_strings(tmp_path):
  from tests import tiny as testing
  c = testing.tiny_config(tmp_path)
  got = tracking.hparams(c, {"resolved.train.microbatches": 2, "train.keep": None})
  assert got["resolved.train.microbatches"] == 2 and got["train.keep"] == "None"
  assert got["eval.splits"] == '["valid", "test"]' and got["model.expand"] == "None"
  assert got["optim.lr"] == c.optim.lr and got["train.async_save"] is False
  assert all(isinstance(v, (str, bool, int, float)) for v in got.values())


def test_wandb_missing_is_one_line(tmp_path, capsys, monkeypatch):
  monkeypatch.setitem(sys.modules, "wandb", None)  # As if not installed: imports fail.
  path = train_cli.config_file(tmp_path, steps=2)
  err = train_cli.exits_with_one_line(train.main, train_cli.argv(path, log__wandb="true"),
                                      capsys)
  assert err == ('error: config.log.wandb: true needs the wandb package, which is not '
                 'installed: pip install -e ".[wandb]" (or pip install wandb), or set '
                 '--config.log.wandb=false.')


def wandb_records(path: pathlib.Path) -> list:
  """The Record protos of a .wandb file: W&B's LevelDB-style log (7-byte header, 32 KiB blocks
  of chunks: CRC32, length, type FULL=1 FIRST=2 MIDDLE=3 LAST=4)."""
  from wandb.proto import wandb_internal_pb2
  raw, block = path.read_bytes(), 32768
  assert raw[:4] == b":W&B"
  pos, chunks, records = 7, b"", []
  while pos + 7 <= len(raw):
    if block - pos % block < 7:  # A block's tail too short for a chunk header is padding.
      pos += block - pos % block
      continue
    _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
    if kind == 0:
      break
    chunks = (b"" if kind in (1, 2) else chunks) + raw[pos + 7:pos + 7 + length]
    pos += 7 + length
    if kind in (1, 4):
      record = wandb_internal_pb2.Record()
      record.ParseFromString(chunks)
      records.append(record)
  return records


def wandb_history(path):
  """({step: {key: value}}, {summary key: value}, {config key: value}) of one offline run."""
  history, summary, config = {}, {}, {}
  items = lambda xs: {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in xs}
  for r in wandb_records(path):
    kind = r.WhichOneof("record_type")
    if kind == "history":
      history.setdefault(r.history.step.num, {}).update(items(r.history.item))
    elif kind == "summary":
      summary.update(items(r.summary.update))
    elif kind == "config":
      config.update(items(r.config.update))
  return history, summary, config


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
  """W&B in offline mode with every folder in tmp_path and no credentials: nothing is sent."""
  pytest.importorskip("wandb", reason="wandb is not installed (pip install -e '.[wandb]')")
  for key in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_ENTITY", "WANDB_PROJECT",
              "WANDB_RUN_ID", "WANDB_RESUME"):
    monkeypatch.delenv(key, raising=False)
  root = tmp_path / "wandb_home"
  env = {"WANDB_MODE": "offline", "WANDB_DIR": root, "WANDB_CACHE_DIR": root / "cache",
         "WANDB_CONFIG_DIR": root / "config", "WANDB_DATA_DIR": root / "data",
         "WANDB_ARTIFACT_DIR": root / "artifacts", "WANDB_DISABLE_CODE": "true",
         "WANDB_DISABLE_GIT": "true", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
         "WANDB_X_DISABLE_STATS": "true", "WANDB_X_DISABLE_META": "true",
         "WANDB_X_DISABLE_MACHINE_INFO": "true"}
  for key, value in env.items():
    if isinstance(value, pathlib.Path):
      value.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv(key, str(value))
  return root


@pytest.mark.slow
def test_wandb_offline_run_resumes_with_the_same_id(tmp_path, wandb_offline):
  path = train_cli.config_file(tmp_path, steps=4, mesh_data=1)
  overrides = dict(log__wandb="true", log__wandb_project="inn-test")
  first = runner.train(train_cli.load(path, train__stop_at=2, **overrides))
  assert first == {"stopped_at": 2}
  config = train_cli.load(path, **overrides)
  saved = json.loads((pathlib.Path(config.workdir) / tracking.WANDB_FILE).read_text())
  results = runner.train(config)  # Resumes at step 2: the same W&B run.
  assert json.loads((pathlib.Path(config.workdir) / tracking.WANDB_FILE).read_text()) == saved
  runs = sorted((wandb_offline / "wandb").glob("offline-run-*"))
  files = [sorted(r.glob("run-*.wandb")) for r in runs]
  assert len(runs) == 2 and all(f == [r / f"run-{saved['id']}.wandb"] for r, f in
                                zip(runs, files)), files
  (h1, _, c1), (h2, s2, c2) = (wandb_history(f[0]) for f in files)
  assert sorted(h1) == [1, 2] and sorted(h2) == [3, 4]
  rows = [json.loads(x) for x in (pathlib.Path(config.workdir) / "metrics.jsonl")
          .read_text().splitlines()]
  for row in rows:  # The same scalars as metrics.jsonl and TensorBoard, at the same steps.
    logged = (h1 if row["step"] <= 2 else h2)[row["step"]]
    for key, value in row.items():
      if key not in ("step", "split", "time"):
        assert math.isclose(logged[f"{row['split']}/{key}"], value, rel_tol=1e-6), key
  assert s2["final/valid_bpc"] == pytest.approx(results["valid_bpc"])
  for c in (c1, c2):
    assert c["optim.lr"] == pytest.approx(config.optim.lr) and c["model.kind"] == "inn"
  assert c2["resolved.train.microbatches"] == results["microbatches"]["train"]
