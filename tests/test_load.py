"""inn_jax.load: a trained workdir's parameters alone (not the optimiser state), equal to the
trainer's own restore, on one device or a mesh; plain Orbax + NNX read them; workdirs whose
checkpoints hold Variable-wrapped parameters (earlier versions) load too."""

import pathlib

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from jax.sharding import AxisType

import inn_jax
from inn_jax import sample, sharding
from inn_jax.train import runner
from tests import tiny as testing


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  config = testing.tiny_config(tmp_path_factory.mktemp("load"), steps=3)
  config.mesh.data = 1
  config.train.update(eval_every=3, save_every=3)
  runner.train(config)
  return pathlib.Path(config.workdir), config


def _trainer_params(workdir, config):
  """The parameters as the trainer restores its best state (optimiser included)."""
  r = runner.Run(config)
  try:
    state, _ = r.checkpoints.restore(r.abstract_state(), best=True)
  finally:
    r.checkpoints.close()
  return state["params"]


def test_load_equals_the_trainers_restore_and_samples(trained):
  workdir, config = trained
  model, vocab, saved = inn_jax.load(workdir)
  assert saved.model.to_dict() == config.model.to_dict() and vocab.size > 2
  got = nnx.state(model, nnx.Param)
  chex.assert_trees_all_equal(jax.tree.map(np.asarray, nnx.to_pure_dict(got)),
                     jax.tree.map(np.asarray, nnx.to_pure_dict(_trainer_params(workdir, config))))
  out = sample.Sampler(model)(np.asarray([vocab.encode("abc")], np.int32), 12, seed=0)
  text = vocab.decode(np.asarray(out.tokens_BL[0]))
  assert len(text) == 12 and set(text) <= set("abcdefgh ")


@pytest.mark.filterwarnings("error:Sharding info not provided")
def test_plain_orbax_and_nnx_read_the_parameters(trained):
  """docs/library.md's recipe (examples/library.py's plain_orbax) reads what inn_jax.load does;
  its target names each array's sharding, so Orbax does not warn that it guesses it."""
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      "library_example", pathlib.Path(__file__).resolve().parents[1] / "examples" / "library.py")
  example = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(example)
  workdir, _ = trained
  model, _, _ = inn_jax.load(workdir)
  params = nnx.state(example.plain_orbax(workdir), nnx.Param)
  chex.assert_trees_all_equal(jax.tree.map(np.asarray, nnx.to_pure_dict(params)),
                     jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param))))


def test_a_workdir_of_an_earlier_version_loads(trained, tmp_path):
  """Its checkpoint stores the State form (Variable wrappers); load reads that too."""
  workdir, config = trained
  params = _trainer_params(workdir, config)
  old = tmp_path / "old"
  old.mkdir()
  for name in ("config.json", "vocab.json"):
    (old / name).write_bytes((workdir / name).read_bytes())
  manager = ocp.CheckpointManager((old / "checkpoints").absolute(),
                                  options=ocp.CheckpointManagerOptions(create=True))
  manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave({"params": params}),
                                          meta=ocp.args.JsonSave({"step": 3})))
  manager.wait_until_finished()
  manager.close()
  model, _, _ = inn_jax.load(old, step="latest")
  chex.assert_trees_all_equal(
      jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param))),
      jax.tree.map(np.asarray, nnx.to_pure_dict(params)))
  with pytest.raises(FileNotFoundError, match="step 7 is not in"):
    inn_jax.load(old, step=7)


def test_load_onto_a_mesh_splits_the_neurons(trained):
  workdir, _ = trained
  mesh = jax.make_mesh((2, 2), sharding.MESH_AXES, axis_types=(AxisType.Auto,) * 2)
  model, _, _ = inn_jax.load(workdir, mesh=mesh)
  kernel = model.layers[0].memory.in_proj.kernel[...]
  assert kernel.sharding.spec[0] == "neuron" and kernel.sharding.shard_shape(kernel.shape)[0] == 2
  assert model.embed.table_VD[...].sharding.is_fully_replicated


@pytest.mark.parametrize("explicit", [False, True])
def test_a_model_loaded_without_a_mesh_runs_later_under_one(trained, explicit):
  """Loaded onto no mesh, the parameters are not committed to device 0, so the model runs
  under a mesh afterwards (it failed with "incompatible devices") and computes the same."""
  import jax.numpy as jnp
  from jax.sharding import PartitionSpec as P
  workdir, _ = trained
  model, vocab, _ = inn_jax.load(workdir)
  kernel = model.layers[0].memory.in_proj.kernel[...]
  assert not kernel.committed
  x = jnp.asarray([vocab.encode("abcd"), vocab.encode("dcba")], jnp.int32)
  want = model(x)
  mesh = jax.make_mesh((2, 2), sharding.MESH_AXES,
                       axis_types=(AxisType.Explicit if explicit else AxisType.Auto,) * 2)
  with jax.set_mesh(mesh):
    got = nnx.jit(lambda m, t: m(t))(model, jax.device_put(x, P("data")))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_load_onto_a_mesh_the_rules_do_not_fit_is_an_error(trained):
  """A mesh of other axis names outside axis_rules: named (it loaded replicated); inside rules
  that map it, the neurons are split."""
  workdir, _ = trained
  mesh = jax.make_mesh((2, 2), ("batch", "model"), axis_types=(AxisType.Auto,) * 2)
  with pytest.raises(ValueError, match=r"sharding rule \('batch', 'data'\): the mesh has no axis"):
    inn_jax.load(workdir, mesh=mesh)
  with sharding.axis_rules((("batch", "batch"), ("neurons", "model"))):
    model, _, _ = inn_jax.load(workdir, mesh=mesh)
  assert model.layers[0].memory.in_proj.kernel[...].sharding.spec[0] == "model"


def test_checkpoints_on_disk_are_plain(trained):
  """The saved state is NNX's pure dict: no Variable 'value' wrappers in its tree (Orbax's
  tree metadata, one key path per array)."""
  import json
  workdir, _ = trained
  step = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  meta = json.loads((workdir / "checkpoints" / str(step) / "state" / "_METADATA").read_text())
  paths = list(meta["tree_metadata"])
  assert any(p.startswith("('params', 'layers'") for p in paths), paths[:3]
  assert not any("'value'" in p for p in paths), [p for p in paths if "'value'" in p][:3]
