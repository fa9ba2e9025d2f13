"""Multi-process training (issues 7 and 12): two train.py processes on 127.0.0.1, joined by
jax.distributed (CPU collectives over Gloo), each with 2 fake CPU devices, train on one
(data=2, neuron=2) mesh spanning both, and match one process with 4 devices; a SIGTERM to one
of them stops both at the same step, saved, and the resumed pair ends as an uninterrupted one."""

import json
import pathlib
import re
import signal
import socket
import subprocess
import time

import jax
import numpy as np
import pytest

from inn_jax.train import runner
from tests import train_cli

STEPS = 3
KEYS = dict(mesh__data=2, mesh__neuron=2, train__save_every=2, train__async_save="true",
            model__attn_dropout=0.2)  # Dropout on: its keys must agree across processes.


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def losses(workdir) -> list[float]:
  rows = [json.loads(line) for line in open(pathlib.Path(workdir) / "metrics.jsonl")]
  return [r["loss"] for r in rows if r["split"] == "train"]


def run_two_processes(path, workdir, logs, keys=KEYS, sigterm_after=None) -> list[int]:
  """train.py as process 0 and 1 of 2 on 127.0.0.1; their exit codes. sigterm_after=k: SIGTERM
  to process 1 alone once step k is in metrics.jsonl."""
  port = free_port()  # Free a moment ago; process 0 binds it for the coordinator.
  env = {**train_cli.env(2), "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"}
  procs = []
  try:
    for i, log in enumerate(logs):
      cmd = train_cli.command(path, workdir=workdir, distributed__enabled="true",
                              distributed__coordinator_address=f"127.0.0.1:{port}",
                              distributed__num_processes=2, distributed__process_id=i, **keys)
      procs.append(subprocess.Popen(cmd, env=env, cwd=train_cli.REPO, stdout=log,
                                    stderr=subprocess.STDOUT))
    if sigterm_after is not None:
      metrics, deadline = pathlib.Path(workdir) / "metrics.jsonl", time.time() + 300
      while procs[1].poll() is None and time.time() < deadline:
        if metrics.exists() and f'"step": {sigterm_after},' in metrics.read_text():
          procs[1].send_signal(signal.SIGTERM)
          break
        time.sleep(0.005)
    return [p.wait(timeout=300) for p in procs]
  finally:
    for p in procs:  # One that failed can leave the other waiting for it.
      if p.poll() is None:
        p.kill()
        p.wait()


@pytest.mark.slow
def test_two_processes_train_as_one_process_with_four_devices(tmp_path):
  path = train_cli.config_file(tmp_path, STEPS)
  one = train_cli.load(path, workdir=tmp_path / "one", **KEYS)
  single = runner.train(one)  # This process: 4 devices (tests/conftest.py).
  two = train_cli.load(path, workdir=tmp_path / "two", **KEYS)
  names = [tmp_path / f"process{i}.log" for i in range(2)]
  logs = [open(n, "w") for n in names]
  try:
    codes = run_two_processes(path, two.workdir, logs)
  finally:
    for log in logs:
      log.close()
  outputs = [n.read_text() for n in names]
  assert codes == [0, 0], "\n\n".join(o[-3000:] for o in outputs)
  assert "mesh {'data': 2, 'neuron': 2}" in outputs[0]

  results = json.loads((pathlib.Path(two.workdir) / "results.json").read_text())
  assert (results["process_count"], results["device_count"]) == (2, 4)
  assert (single["process_count"], single["device_count"]) == (1, 4)
  assert len(losses(two.workdir)) == STEPS
  np.testing.assert_allclose(losses(two.workdir), losses(one.workdir), rtol=1e-6)
  np.testing.assert_allclose(results["scores"]["valid"]["reset"]["nats"],
                             single["scores"]["valid"]["reset"]["nats"], rtol=1e-6)
  # The checkpoint both processes wrote restores here, on one process, to the same state, up
  # to float32 rounding (the gradient all-reduce sums in another order).
  (a, meta_a), (b, meta_b) = train_cli.restore(one), train_cli.restore(two)
  assert meta_a["step"] == meta_b["step"] == STEPS
  leaves = jax.tree_util.tree_flatten_with_path(a)[0]
  for (path, x), y in zip(leaves, jax.tree.leaves(b), strict=True):
    x, y, name = np.asarray(x), np.asarray(y), jax.tree_util.keystr(path)
    if "['comm']['in_proj']['bias']" in name:
      # The key bias's exact gradient is 0 (softmax ignores a shift of every key), so Adam
      # scales rounding noise up to full steps there: its third of q, k, v is left out.
      keep = np.r_[:x.size // 3, 2 * x.size // 3:x.size]
      x, y = x[keep], y[keep]
    np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5 * np.abs(x).max(), err_msg=name)


def _two(tmp_path, name, path, keys, sigterm_after=None):
  """Runs the pair in tmp_path/name; (exit codes, both logs)."""
  names = [tmp_path / f"{name}{i}.log" for i in range(2)]
  logs = [open(n, "a") for n in names]
  try:
    codes = run_two_processes(path, tmp_path / name, logs, keys, sigterm_after)
  finally:
    for log in logs:
      log.close()
  return codes, [n.read_text() for n in names]


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_one_step_and_the_pair_resumes(tmp_path):
  steps = 60
  keys = {**KEYS, "train__save_every": 25, "train__log_every": 1}
  path = train_cli.config_file(tmp_path, steps)
  codes, outputs = _two(tmp_path, "whole", path, keys)
  assert codes == [0, 0], outputs[0][-3000:]
  codes, outputs = _two(tmp_path, "stopped", path, keys, sigterm_after=8)
  assert codes == [0, 0], "\n\n".join(o[-3000:] for o in outputs)
  found = [re.findall(r"stopped at step (\d+) \(SIGTERM; 60 steps in all\)", o) for o in outputs]
  assert found[0] == found[1] and len(found[0]) == 1, outputs  # One step for both processes.
  stop = int(found[0][0])
  assert 8 < stop < steps
  codes, outputs = _two(tmp_path, "stopped", path, keys)
  assert codes == [0, 0] and f"resumed from step {stop} " in outputs[0], outputs[0][-3000:]
  a = train_cli.load(path, workdir=tmp_path / "whole", **keys)
  b = train_cli.load(path, workdir=tmp_path / "stopped", **keys)
  train_cli.assert_same_run(a, b, f"stopped at step {stop}")
