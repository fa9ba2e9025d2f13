"""benchmarks/population_scaling.py: its slopes against known power laws, and one small point
measured end to end (the benchmark itself runs from benchmarks/, not in the suite)."""

import importlib.util
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def bench():
  spec = importlib.util.spec_from_file_location(
      "population_scaling", REPO / "benchmarks" / "population_scaling.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_slopes_recover_known_powers_of_n():
  b = bench()
  ns = [4, 16, 64, 256, 1024]
  points = [{"family": "fixed_width", "kind": "attention", "n_neurons": n, "step_s": 2.0 * n,
             "train_flops_per_token": 3.0 * n ** 0.5, "params": 7.0} for n in ns]
  points.append({"family": "fixed_width", "kind": "attention", "n_neurons": 2048,
                 "failed": "over --timeout"})  # A failed point is left out of the fit.
  s = b.slopes(points)["fixed_width"]["attention"]
  assert s["step_s"] == pytest.approx(1.0) and s["tokens_per_s"] == pytest.approx(-1.0)
  assert s["train_flops_per_token"] == pytest.approx(0.5)
  assert s["params"] == pytest.approx(0.0, abs=1e-12)
  assert b.slopes(points, 64)["fixed_width"]["attention"]["step_s"] == pytest.approx(1.0)
  assert s["xla_step_bytes"] is None  # No data: no slope.


def test_one_small_point_trains_and_counts():
  b = bench()
  args = b.argparse.Namespace(width=16, neuron_width=4, d_model=16, layers=1, slots=4, batch=2,
                              length=16, repeats=3)
  row = b.point("workspace", "fixed_width", 4, args)
  assert row["neuron_width"] == 4 and row["population_width"] == 16
  assert row["trains"] and np.isfinite(row["loss_last"])
  # The train step's matmuls: forward, and backward twice the forward's (every matmul here
  # reads a parameter), as inn_jax.train.flops counts them.
  assert row["train_flops_per_token"] == pytest.approx(3 * row["forward_flops_per_token"])
  assert row["xla_step_bytes"] > 0 and row["tokens_per_s"] > 0
