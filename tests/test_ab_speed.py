"""benchmarks/ab_speed.py: two commits' train steps timed alternately, each in its own checkout."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "ab_speed.py"


def test_bad_counts_exit_2_with_one_line():
  proc = subprocess.run([sys.executable, str(SCRIPT), "--rounds", "0"], capture_output=True,
                        text=True, timeout=60)
  assert proc.returncode == 2 and "--rounds 0" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_commit_against_itself(tmp_path):
  """HEAD against HEAD on the quickstart INN: both sides measured in their own worktree, the
  ratio near 1 on an idle machine (recorded, not asserted: timings are noise here), the
  worktrees removed afterwards."""
  out = tmp_path / "ab.json"
  proc = subprocess.run([sys.executable, str(SCRIPT), "--config", "quickstart", "--base", "HEAD",
                         "--rounds", "1", "--warmup", "0", "--steps", "2", "--out", str(out)],
                        cwd=REPO, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(out.read_text())
  assert report["commits"]["base"] == report["commits"]["new"]
  from inn_jax.train import config as config_lib
  c = config_lib.load("quickstart")
  assert report["batch"] == [c.data.batch_size, c.data.seq_len]
  assert len(report["tokens_per_s"]["base"]) == 1 and report["ratio_new_over_base"]["median"] > 0
  # Each side's process started as its trainer starts one (inn_jax.train.host).
  from inn_jax.train import host
  env = dict(os.environ)
  huge = host.malloc_huge_pages(host.huge_pages_env(env) or env)
  assert [report["per_round"][0][side]["malloc_huge_pages"] for side in ("base", "new")] == \
      [huge, huge]
  worktrees = subprocess.run(["git", "worktree", "list"], cwd=REPO, capture_output=True,
                             text=True).stdout
  assert "ab_speed_" not in worktrees
