"""inn_jax.train.mesh: (data, neuron) meshes train as one device does, the INN's neuron axis is
really split over the neuron devices, and the compiled train step exchanges only what the
computation needs."""

import collections
import json
import math
import pathlib
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from inn_jax.models import build_model
from inn_jax.train import loop, mesh as mesh_lib, optimizer, runner
from tests import tiny as testing
from inn_jax.train.config import base_config, paper_model
from tests.trees import assert_trees_close


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
    model = nnx.merge(r.parts.graphdef_eval, params, jax.tree.map(lambda a: a, r.parts.rest))
    model.capture()  # The INN sows its per-layer neuron states, B x N x L x D.
    _, sown = nnx.capture(model, nnx.Intermediate)(x_BL)
    return [v for k, v in nnx.to_flat_state(sown) if k[-1] == "neurons_BNLD"][0].get_value()[0]

  with jax.set_mesh(r.mesh):
    h_BNLD = jax.jit(neurons)(params, x_BL)
  assert h_BNLD.shape == (8, 4, 16, 16)
  assert h_BNLD.sharding.is_equivalent_to(NamedSharding(r.mesh, P("data", "neuron")), 4)
  assert {s.data.shape for s in h_BNLD.addressable_shards} == {(4, 2, 16, 16)}

  # The train step itself carries the population's constraint, batch over data and neurons over
  # neuron, and no folded (B*N) layout.
  lr, _ = optimizer.schedules(r.config.optim, 3)
  step_fn = loop.make_train_step(r.parts.graphdef, r.parts.rest, r.parts.tx, lr, 1)
  text = loop.lower_train_step(step_fn, r.state, (8, 16), r.mesh).as_text()
  constraints = [line for line in text.splitlines() if "sharding_constraint" in line]
  assert any('[{"data"}, {"neuron"}, {}, {}]' in line for line in constraints)
  assert not any('{"data", "neuron"}' in line for line in constraints)


def tiny_step(paper: bool, mesh_shape, **model):
  """A tiny INN's train step on `mesh_shape`: (compiled, state, batch, model config)."""
  cfg = testing.tiny_model(paper_model("inn", paper))
  cfg.update(attn_dropout=0.0, **model)
  net = build_model(cfg, 9, nnx.Rngs(0))
  net.train()
  graphdef, params, rest = nnx.split(net, nnx.Param, ...)
  optim = base_config("tiny", cfg, "text_file").optim
  tx = optimizer.make_optimizer(optim, 10)
  mesh = mesh_lib.make_mesh(_mesh_cfg(*mesh_shape))
  state = loop.init_state(params, tx)
  state = jax.device_put(state, mesh_lib.state_shardings(state, mesh))
  step = loop.make_train_step(graphdef, rest, tx, optimizer.schedules(optim, 10)[0], 1)
  return loop.compile_train_step(step, state, (8, 16), mesh), state, cfg


def _mesh_cfg(data, neuron):
  return ml_collections.ConfigDict(dict(data=data, neuron=neuron))


COLLECTIVE = re.compile(r"= (.*?) (all-gather|all-reduce|reduce-scatter|all-to-all|"
                        r"collective-permute)(?:-start)?\(")
SHAPE = re.compile(r"\w+\[([\d,]*)\]")


def collectives(text):
  """[(kind, [shape of each result])] of every collective in compiled HLO text."""
  out = []
  for line in text.splitlines():
    m = COLLECTIVE.search(line)
    if m:
      out.append((m.group(2), [tuple(int(d) for d in dims.split(",") if d)
                               for dims in SHAPE.findall(m.group(1))]))
  return out


@pytest.mark.parametrize("paper", [False, True], ids=["default", "paper"])
@pytest.mark.parametrize("mesh_shape", [(1, 2), (2, 2), (1, 4)])
def test_train_step_collectives_are_only_what_the_computation_needs(paper, mesh_shape):
  """No all-to-all, no permutes; on the neuron axis one key/value all-gather per layer forward
  and its reduce-scatter backward, and two (batch, length, width) all-reduces: the mean over
  neurons and, backward, the sum of the neurons' gradients at the replication of the input;
  every other all-reduce sums parameter gradients or scalars (gradient norm, finite checks)."""
  compiled, state, cfg = tiny_step(paper, mesh_shape)
  data, neuron = mesh_shape
  found = collectives(compiled.as_text())
  kinds = collections.Counter(kind for kind, _ in found)
  b, n, length, d = 8 // data, cfg.n_neurons // neuron, 16, cfg.d_model
  kv = (b, n, length, 2, cfg.n_heads, d // cfg.n_heads)  # This device's keys and values.
  assert set(kinds) <= {"all-gather", "reduce-scatter", "all-reduce"}, kinds
  assert kinds["all-gather"] == kinds["reduce-scatter"] == cfg.n_layers, kinds
  assert all(shapes == [kv] for kind, shapes in found if kind == "reduce-scatter")
  assert all(shapes == [(b, cfg.n_neurons, *kv[2:])] for kind, shapes in found
             if kind == "all-gather")
  params = [x.sharding.shard_shape(x.shape) for x in jax.tree.leaves(state["params"])]
  allowed = {tuple(sorted(p)) for p in params}
  mean, other = 0, []
  for kind, shapes in found:
    if kind != "all-reduce":
      continue
    for shape in shapes:
      if shape == (b, length, d):
        mean += 1
      elif math.prod(shape) > 1 and tuple(sorted(shape)) not in allowed:
        other.append(shape)
  assert mean == 2 and not other, (mean, other)


@pytest.mark.parametrize("paper", [False, True], ids=["default", "paper"])
@pytest.mark.parametrize("mesh_shape", [(1, 2), (2, 2), (1, 4)])
def test_sharded_loss_and_gradients_equal_one_device(paper, mesh_shape):
  cfg = testing.tiny_model(paper_model("inn", paper))
  cfg.attn_dropout = 0.0
  net = build_model(cfg, 9, nnx.Rngs(0))
  net.train()
  graphdef, params, rest = nnx.split(net, nnx.Param, ...)
  x, y = (jax.random.randint(jax.random.key(i), (8, 16), 0, 9) for i in (1, 2))

  def loss(params, x, y):
    logits = nnx.merge(graphdef, params, jax.tree.map(lambda a: a, rest))(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  want = jax.jit(jax.value_and_grad(loss))(params, x, y)
  mesh = mesh_lib.make_mesh(_mesh_cfg(*mesh_shape))
  shardings = mesh_lib.state_shardings(params, mesh)
  rows = mesh_lib.batch_sharding(mesh)
  with jax.set_mesh(mesh):
    got = jax.jit(jax.value_and_grad(loss), in_shardings=(shardings, rows, rows))(
        jax.device_put(params, shardings), x, y)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  # The split computation sums the neurons' and rows' float32 contributions in another order
  # (all-reduces, reduce-scatters): 1e-5 relative, 1e-6 of each gradient's largest entry.
  assert_trees_close(got[1], want[1], rtol=1e-5, scaled_atol=1e-6)


def test_per_neuron_parameters_are_split_over_the_neuron_axis():
  cfg = testing.tiny_model(paper_model("inn", False))
  cfg.neuron_params = "ssm"
  net = build_model(cfg, 9, nnx.Rngs(0))
  params = nnx.state(net, nnx.Param)
  mesh = mesh_lib.make_mesh(_mesh_cfg(1, 4))
  placed = jax.device_put(params, mesh_lib.state_shardings(params, mesh))
  flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(placed)}
  split = {k for k, v in flat.items() if not v.sharding.is_fully_replicated}
  assert split and all(flat[k].sharding.shard_shape(flat[k].shape)[0] == 1 for k in split)
  assert {k for k in split if "A_log" in k or "D_E" in k or "dt_bias" in k or "neuron_embed" in k
          } == split
