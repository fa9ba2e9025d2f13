"""Matmul FLOPs inside a shard_map: the whole logical computation's, the same on any mesh."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import AbstractMesh, AxisType
from jax.sharding import PartitionSpec as P

from inn_jax.train import flops
from tests import train_cli


@pytest.mark.parametrize("in_specs, out_spec", [
    ((P("a"), P()), P("a")),                 # Rows split over a, replicated over b.
    ((P("a"), P(None, "b")), P("a", "b")),   # Rows over a, columns over b.
    ((P(("a", "b")), P()), P(("a", "b"))),   # Rows over both.
    ((P(), P()), P()),                       # Nothing split: every device repeats it.
])
def test_matmul_in_a_shard_map_counts_as_without(in_specs, out_spec):
  """x @ w, (8, 4) @ (4, 6): 2 * 8 * 4 * 6 however a 2 x 2 mesh splits it (traced only)."""
  mesh = AbstractMesh((2, 2), ("a", "b"), axis_types=(AxisType.Auto,) * 2)
  matmul = lambda x, w: x @ w
  x, w = jnp.ones((8, 4)), jnp.ones((4, 6))
  sharded = jax.shard_map(matmul, mesh=mesh, in_specs=in_specs, out_specs=out_spec)
  assert flops.fn_flops(sharded, x, w) == flops.fn_flops(matmul, x, w) == 2 * 8 * 4 * 6


def test_gathered_scores_in_a_shard_map():
  """Scores of each row against all rows gathered over the mesh (attention's pattern)."""
  mesh = AbstractMesh((2,), ("a",), axis_types=(AxisType.Auto,))
  x = jnp.ones((8, 4))
  scores = lambda x, all_x: x @ all_x.T
  gathered = lambda x: scores(x, jax.lax.all_gather(x, "a", tiled=True))
  sharded = jax.shard_map(gathered, mesh=mesh, in_specs=P("a"), out_specs=P("a"))
  assert flops.fn_flops(sharded, x) == flops.fn_flops(lambda x: scores(x, x), x) == 2 * 8 * 4 * 8


def _summary_flops(tmp_path, n_devices: int, *flags: str) -> dict:
  """flops_per_token of `python -m inn_jax.summary` for the quick start's INN (4 neurons, one
  layer) on n_devices fake CPU devices."""
  out = tmp_path / str(n_devices)
  subprocess.run([sys.executable, "-m", "inn_jax.summary", "--config",
                  str(train_cli.REPO / "configs/quickstart.py"), "--config.model.n_layers=1",
                  "--vocab_size", "27", "--out", str(out), *flags],
                 env=train_cli.env(n_devices), cwd=train_cli.REPO, check=True,
                 capture_output=True, timeout=300)
  return json.loads((out / "summary.json").read_text())["flops_per_token"]


def test_inn_summary_flops_do_not_depend_on_the_device_count(tmp_path):
  """On 4 devices a 2 x 2 mesh splits the batch and the neurons, and the INN's attention runs in
  a shard_map at one shard's shapes; on 1 there is no shard_map."""
  one = _summary_flops(tmp_path, 1)
  four = _summary_flops(tmp_path, 4, "--config.mesh.data=2", "--config.mesh.neuron=2")
  assert one["forward"] > 0 and four == one
