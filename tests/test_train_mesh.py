"""inn_jax.train.mesh: a 2 x 2 (data, neuron) mesh trains as one device does, and the INN's
neuron axis is really split over the neuron devices."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from inn_jax.train import loop, mesh as mesh_lib, optimizer, runner, testing


def config_on(tmp_path, data, neuron):
  config = testing.tiny_config(tmp_path, steps=3)
  config.workdir = str(tmp_path / f"mesh{data}x{neuron}")
  config.mesh.update(data=data, neuron=neuron)
  config.eval.update(carry_state="no", splits=("valid",))
  config.model.attn_dropout = 0.0  # The same numbers on any mesh (dropout masks are per shard).
  return config


def test_mesh_shape_and_axes(tmp_path):
  cfg = testing.tiny_config(tmp_path).mesh
  cfg.update(data=-1, neuron=2)
  mesh = mesh_lib.make_mesh(cfg)
  assert dict(mesh.shape) == {"data": 2, "neuron": 2}
  cfg.update(data=1, neuron=1)
  assert mesh_lib.make_mesh(cfg).devices.size == 1
  with pytest.raises(ValueError, match="needs 8 devices"):
    cfg.update(data=4, neuron=2)
    mesh_lib.make_mesh(cfg)


def test_sharded_run_matches_single_device(tmp_path):
  results = {}
  for data, neuron in ((1, 1), (2, 2)):
    config = config_on(tmp_path, data, neuron)
    res = runner.train(config)
    rows = [json.loads(line) for line in open(pathlib.Path(config.workdir) / "metrics.jsonl")]
    losses = [r["loss"] for r in rows if r["split"] == "train"]
    results[data, neuron] = losses, res["scores"]["valid"]["reset"]["nats"]
    assert res["device_count"] == 4 and len(losses) == 3
  (single, v1), (sharded, v4) = results[1, 1], results[2, 2]
  np.testing.assert_allclose(sharded, single, rtol=1e-5)
  np.testing.assert_allclose(v4, v1, rtol=1e-5)
  assert single[0] != single[-1]  # The steps changed the parameters.


def test_neuron_axis_of_activations_is_sharded(tmp_path):
  r = runner.Run(config_on(tmp_path, 2, 2))
  params = r.state["params"]
  x_BL = jnp.zeros((8, 16), jnp.int32)

  def neurons(params, x_BL):
    model = nnx.merge(r.graphdef_eval, params, jax.tree.map(lambda a: a, r.rest))
    model.capture()  # The INN sows its per-layer neuron states, B x N x L x D.
    _, sown = nnx.capture(model, nnx.Intermediate)(x_BL)
    return [v for k, v in nnx.to_flat_state(sown) if k[-1] == "neurons_BNLD"][0].get_value()[0]

  with jax.set_mesh(r.mesh):
    h_BNLD = jax.jit(neurons)(params, x_BL)
  assert h_BNLD.shape == (8, 4, 16, 16)
  assert h_BNLD.sharding.is_equivalent_to(NamedSharding(r.mesh, P("data", "neuron")), 4)
  assert {s.data.shape for s in h_BNLD.addressable_shards} == {(4, 2, 16, 16)}

  # The train step itself carries the constraints: (B*N) folded over both axes and, for the
  # communication, the neuron axis alone.
  lr, _ = optimizer.schedules(r.config.optim, 3)
  step_fn = loop.make_train_step(r.graphdef_train, r.rest, r.tx, lr, 1)
  text = loop.lower_train_step(step_fn, r.state, (8, 16), r.mesh).as_text()
  assert '[{"data", "neuron"}, {}, {}]' in text
  assert '[{"data"}, {"neuron"}, {}]' in text
