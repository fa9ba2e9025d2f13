"""The models as a researcher uses them in their own code (issue 22's problems, one test each):
JAX's default (Explicit) mesh and an Auto one, sharding metadata NNX sees, rules for a mesh of
other axis names, functional gradients in training mode with keys passed in, typed configs that
fail early and name the key, and one call convention for every model."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from inn_jax import sharding
from inn_jax.models import (INN, LSTM, MODELS, INNConfig, LSTMConfig, MambaStack,
                            MambaStackConfig, Transformer, TransformerConfig, build_model,
                            typed_config)
from inn_jax.nn import CommunicationConfig, MambaConfig, neurons

CFG = INNConfig(d_model=16, n_layers=2, n_neurons=4,
                memory=MambaConfig(expand=None, neuron_params="full", d_state=4, scan_chunk=8),
                communication=CommunicationConfig(n_heads=2, dropout=0.0))


def inn(config=CFG, **rngs):
  model = INN(config, 27, rngs=nnx.Rngs(**(rngs or dict(params=0, dropout=1))))
  model.eval()
  return model


def tokens(batch=4, length=12, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 27, (batch, length)), jnp.int32)


def loss(model, x, **kw):
  logits = model(x, **kw)
  return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], x[:, 1:]).mean()


# ------------------------------------------------------------------- problem 2: any mesh type

@pytest.mark.parametrize("axis_types", [None, (AxisType.Auto,) * 2], ids=["default", "auto"])
def test_the_default_mesh_and_both_axis_types_compute_what_one_device_does(axis_types):
  """jax.make_mesh's default (Explicit axes in current JAX) and Auto: forward and gradient
  under nnx.jit equal one device's, with the batch split over data and neurons over neuron."""
  x = tokens()
  want_logits, want_grads = inn()(x), nnx.grad(loss)(inn(), x)
  kw = {} if axis_types is None else dict(axis_types=axis_types)
  mesh = jax.make_mesh((2, 2), ("data", "neuron"), **kw)
  with jax.set_mesh(mesh):
    model = inn()  # Built inside the mesh too (the embedding gather needs its out_sharding).
    xs = jax.device_put(x, P("data"))
    got = nnx.jit(lambda m, x: m(x))(model, xs)
    grads = nnx.jit(nnx.grad(loss))(model, xs)
  np.testing.assert_allclose(got, want_logits, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(jax.tree.map(np.asarray, nnx.to_pure_dict(grads)),
                              jax.tree.map(np.asarray, nnx.to_pure_dict(want_grads)),
                              rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("axis_types,form", [
    (AxisType.Explicit, "default"), (AxisType.Auto, "default"), (AxisType.Explicit, "workspace"),
    (AxisType.Auto, "workspace"), (AxisType.Explicit, "sequential")])
def test_a_one_device_mesh_computes_what_no_mesh_does(axis_types, form):
  """A laptop's mesh, jax.make_mesh((1, 1), ...): on an Explicit one the arrays carry their
  (size-1) axes in their types, so the scan, the attention and the workspace run their
  per-device code under shard_map there (the workspace's slot queries passed in, not captured;
  every scan method, the sequential one here), and the CPU layouts (inn_jax.nn.neurons.on_rows)
  stay off; on an Auto one the layouts run. Forward and gradient equal no mesh's."""
  config = {"default": CFG,
            "sequential": CFG.replace(memory=CFG.memory.replace(scan_method="sequential")),
            "workspace": CFG.replace(communication=CommunicationConfig(
                kind="workspace", n_heads=2, slots=3, dropout=0.0))}[form]
  x = tokens()
  want_logits, want_grads = inn(config)(x), nnx.grad(loss)(inn(config), x)
  mesh = jax.make_mesh((1, 1), ("data", "neuron"), axis_types=(axis_types,) * 2,
                       devices=jax.devices()[:1])
  with jax.set_mesh(mesh):
    assert neurons.cpu_layouts() == (axis_types == AxisType.Auto)
    model = inn(config)
    xs = jax.device_put(x, P("data"))
    got = nnx.jit(lambda m, x: m(x))(model, xs)
    grads = nnx.jit(nnx.grad(loss))(model, xs)
  np.testing.assert_allclose(got, want_logits, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(jax.tree.map(np.asarray, nnx.to_pure_dict(grads)),
                              jax.tree.map(np.asarray, nnx.to_pure_dict(want_grads)),
                              rtol=1e-4, atol=1e-6)


# ------------------------------------------------ problem 3: metadata, rules, sharded init

def test_per_neuron_weights_carry_sharding_metadata_nnx_sees():
  abstract = nnx.eval_shape(lambda: INN(CFG, 27, rngs=nnx.Rngs(0)))
  specs = nnx.get_partition_spec(nnx.state(abstract))
  kernel = specs["layers"][0]["memory"]["in_proj"]["kernel"].get_value()
  assert kernel == P("neurons", None, None)
  with sharding.axis_rules(sharding.RULES):
    mapped = nnx.get_partition_spec(nnx.state(abstract))
  assert mapped["layers"][0]["memory"]["in_proj"]["kernel"].get_value() == P("neuron", None, None)
  shared = specs["embed"]["table_VD"].get_value()
  assert all(a is None for a in shared)  # Replicated: only the population is split.


@pytest.mark.parametrize("explicit", [False, True])
def test_sharded_init_with_out_shardings_splits_the_neurons(explicit):
  mesh = jax.make_mesh((2, 2), ("data", "neuron"),
                       axis_types=(AxisType.Explicit if explicit else AxisType.Auto,) * 2)
  create = lambda: INN(CFG, 27, rngs=nnx.Rngs(params=0, dropout=1))
  with jax.set_mesh(mesh), sharding.axis_rules(sharding.RULES):
    graphdef, abstract = nnx.split(nnx.eval_shape(create))
    shardings = nnx.get_named_sharding(abstract, mesh)
    state = jax.jit(lambda: nnx.state(create()), out_shardings=shardings)()
    model = nnx.merge(graphdef, state)
  kernel = model.layers[0].memory.in_proj.kernel[...]
  assert kernel.sharding.shard_shape(kernel.shape)[0] == 2  # 4 neurons over 2 devices.
  assert model.embed.table_VD[...].sharding.is_fully_replicated
  model.eval()
  with jax.set_mesh(mesh):
    got = nnx.jit(lambda m, x: m(x))(model, jax.device_put(tokens(), P("data")))
  np.testing.assert_allclose(got, inn()(tokens()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("explicit", [False, True])
def test_a_model_built_eagerly_under_a_mesh_is_sharded_as_its_metadata_says(explicit):
  """Issue 33, item 3: built eagerly inside jax.set_mesh and axis_rules (no eval_shape, no jit),
  every parameter lies as nnx.get_partition_spec reports (per-neuron ones split over 'model'),
  and the model computes what one device does."""
  mesh = jax.make_mesh((2, 2), ("batch", "model"),
                       axis_types=(AxisType.Explicit if explicit else AxisType.Auto,) * 2)
  with jax.set_mesh(mesh), sharding.axis_rules((("batch", "batch"), ("neurons", "model"))):
    model = inn()
    specs = nnx.to_flat_state(nnx.get_partition_spec(nnx.state(model, nnx.Param)))
    x = jax.device_put(tokens(), P("batch"))
    got = nnx.jit(lambda m, x: m(x))(model, x)
  params = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
  split = 0
  for path, spec in specs:
    want = spec.get_value()
    value = params[path].get_value()
    assert value.sharding.is_equivalent_to(NamedSharding(mesh, want), value.ndim), (path, want)
    split += len(want) > 0 and want[0] == "model"
  assert split >= 8  # The per-neuron memories' weights: in_proj, conv, x_proj, ... per layer.
  np.testing.assert_allclose(got, inn()(tokens()), rtol=1e-5, atol=1e-5)


def test_a_mesh_the_rules_do_not_name_is_an_error_and_rules_map_it():
  mesh = jax.make_mesh((2, 2), ("batch", "model"), axis_types=(AxisType.Auto,) * 2)
  x = jax.device_put(tokens(), NamedSharding(mesh, P("batch")))
  with jax.set_mesh(mesh), pytest.raises(ValueError, match=r"sharding rule \('batch', 'data'\): "
                                                           "the mesh has no axis 'data'"):
    nnx.jit(lambda m, x: m(x))(inn(), x)
  with jax.set_mesh(mesh), sharding.axis_rules((("batch", "batch"), ("neurons", "model"))):
    compiled = nnx.jit(lambda m, x: m(x)).lower(inn(), x).compile()
    got = nnx.jit(lambda m, x: m(x))(inn(), x)
  np.testing.assert_allclose(got, inn()(tokens()), rtol=1e-5, atol=1e-5)
  assert "all-gather" in compiled.as_text()  # The neurons' keys and values: really split.


# ------------------------------------- issue 33, item 2: the rules checked in full, no replication

def _data_neuron_mesh(axis_types=(AxisType.Auto,) * 2):
  return jax.make_mesh((2, 2), ("data", "neuron"), axis_types=axis_types)


@pytest.mark.parametrize("rules,match", [
    ((("batch", "data"), ("neurons", "tensor")),
     r"sharding rule \('neurons', 'tensor'\): the mesh has no axis 'tensor'"),
    ((("batch", "data"), ("neuron", "neuron")), r"'neuron' is not a logical axis of inn_jax"),
    ((("batch", "data"), ("batch", "neuron")), r"'batch' is mapped twice"),
], ids=["axis_the_mesh_lacks", "mistyped_logical_name", "twice"])
def test_a_rule_that_does_not_fit_the_mesh_is_an_error(rules, match):
  """Each of these ran with zero collectives, everything replicated; now each names the rule."""
  with jax.set_mesh(_data_neuron_mesh()), pytest.raises(ValueError, match=match):
    with sharding.axis_rules(rules):
      nnx.jit(lambda m, x: m(x))(inn(), jax.device_put(tokens(), P("data")))


@pytest.mark.parametrize("axis_types", [(AxisType.Auto,) * 2, (AxisType.Explicit,) * 2],
                         ids=["auto", "explicit"])
def test_a_size_its_mesh_axis_does_not_divide_is_an_error(axis_types):
  """N = 3 neurons over a neuron axis of 2, and a batch of 3 over a data axis of 2: named,
  where they were replicated; the fix the message gives (the rule to None) then runs."""
  mesh = _data_neuron_mesh(axis_types)
  three = CFG.replace(n_neurons=3)
  with jax.set_mesh(mesh), pytest.raises(ValueError, match=r"'neurons' of size 3 does not divide "
                                                          "over mesh axis 'neuron' of 2 devices"):
    nnx.jit(lambda m, x: m(x))(inn(three), jax.device_put(tokens(), P("data")))
  with jax.set_mesh(mesh), pytest.raises(ValueError, match=r"'batch' of size 3 does not divide "
                                                          "over mesh axis 'data' of 2 devices"):
    nnx.jit(lambda m, x: m(x))(inn(), tokens(batch=3))
  with jax.set_mesh(mesh), sharding.axis_rules((("batch", "data"), ("neurons", None))):
    got = nnx.jit(lambda m, x: m(x))(inn(three), jax.device_put(tokens(), P("data")))
  np.testing.assert_allclose(got, inn(three)(tokens()), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------ problem 6: functional gradients

def test_jax_grad_over_split_state_in_training_mode_with_keys_passed_in():
  config = CFG.replace(communication=CommunicationConfig(n_heads=2, dropout=0.5))
  model = INN(config, 27, rngs=nnx.Rngs(params=0))  # No dropout stream: keys come per call.
  model.train()
  graphdef, state = nnx.split(model)
  x = tokens()
  fn = lambda s, key: loss(nnx.merge(graphdef, s), x, rngs=key)
  g1 = jax.jit(jax.grad(fn))(state, jax.random.key(1))
  g1_again = jax.grad(fn)(state, jax.random.key(1))
  g2 = jax.jit(jax.grad(fn))(state, jax.random.key(2))
  leaf = lambda g: np.asarray(nnx.to_pure_dict(g)["layers"][0]["comm"]["in_proj"]["kernel"])
  np.testing.assert_allclose(leaf(g1), leaf(g1_again), rtol=1e-5, atol=1e-7)  # Pure: same key.
  assert np.abs(leaf(g1) - leaf(g2)).max() > 1e-4  # Another key: other dropout masks.
  off = jax.grad(lambda s: loss(nnx.merge(graphdef, s), x, deterministic=True))(state)
  model.eval()
  np.testing.assert_allclose(leaf(off), leaf(nnx.grad(loss)(model, x)), rtol=1e-5, atol=1e-7)


# ----------------------------------------------------- problem 9: early, named errors

def test_typed_configs_refuse_bad_values_naming_the_field():
  with pytest.raises(ValueError, match=r"MambaConfig.scan_method='blockd' must be one of"):
    MambaConfig(scan_method="blockd")
  with pytest.raises(ValueError, match=r"model.scan_method='blockd' must be one of"):
    typed_config({"kind": "inn", "scan_method": "blockd"})
  with pytest.raises(ValueError, match=r"model.attn_dropout=1.5 must be in \[0, 1\)"):
    typed_config({"kind": "inn", "attn_dropout": 1.5})
  with pytest.raises(ValueError, match="unknown options \\['d_modle'\\]"):
    typed_config({"kind": "inn", "d_modle": 3})
  assert typed_config({"kind": "inn", "dt_rank": 8}).memory.dt_rank == 8
  with pytest.raises(TypeError, match="config must be an INNConfig"):
    INN(LSTMConfig(), 27, rngs=nnx.Rngs(0))


def test_a_model_built_without_a_dropout_stream_runs_and_says_what_training_needs():
  model = INN(CFG.replace(communication=CommunicationConfig(n_heads=2, dropout=0.1)), 27,
              rngs=nnx.Rngs(params=0))
  model.eval()
  assert model(tokens()).shape == (4, 12, 27)
  model.train()
  with pytest.raises(ValueError, match="no 'dropout' stream: pass rngs=<key> to the call"):
    model(tokens())
  assert model(tokens(), rngs=jax.random.key(0)).shape == (4, 12, 27)


# ------------------------------------------------- problem 10: one call convention

MODEL_CONFIGS = {
    "inn": CFG,
    "mamba": MambaStackConfig(d_model=16, n_layers=1, memory=MambaConfig(d_state=4)),
    "lstm": LSTMConfig(hidden=16, n_layers=2, dropout=0.2),
    "transformer": TransformerConfig(d_model=16, n_layers=1, n_heads=2, d_ff=32, dropout=0.2),
}


@pytest.mark.parametrize("kind", sorted(MODEL_CONFIGS))
def test_every_model_has_one_call_convention(kind):
  config = MODEL_CONFIGS[kind]
  model = build_model(config, 27, nnx.Rngs(params=0, dropout=1))
  want = {"inn": INN, "mamba": MambaStack, "lstm": LSTM, "transformer": Transformer}[kind]
  assert type(model) is want is MODELS[kind][0] and isinstance(model.is_recurrent, bool)
  assert model.is_recurrent == (kind != "transformer")
  x = tokens(2, 8)
  cache = model.init_cache(2, max_len=16)
  full = model(x, deterministic=True)
  first, cache = model(x[:, :5], cache=cache, deterministic=True, return_cache=True)
  rest = model(x[:, 5:], cache=cache, deterministic=True)
  np.testing.assert_allclose(jnp.concatenate([first, rest], 1), full, rtol=1e-5, atol=1e-5)
  a = model(x, deterministic=False, rngs=jax.random.key(3))
  b = model(x, deterministic=False, rngs=jax.random.key(3))
  np.testing.assert_array_equal(a, b)  # Keys passed in: the masks are the key's.
  assert model.config is config


def test_public_constructors_and_the_scan_document_their_arguments():
  import inspect
  import pathlib
  import typing
  import inn_jax
  from inn_jax import models, nn, ops
  classes = [getattr(m, n) for m in (models, nn) for n in m.__all__
             if inspect.isclass(getattr(m, n)) and issubclass(getattr(m, n), nnx.Module)]
  assert {c.__name__ for c in classes} >= {"INN", "MambaStack", "LSTM", "Transformer",
                                            "MambaBlock", "Communication", "Embedder",
                                            "LayerNorm"}
  undocumented = [c.__name__ for c in classes if "Args" not in (c.__doc__ or "")]
  assert not undocumented, undocumented
  configs = [getattr(m, n) for m in (models, nn) for n in m.__all__ if n.endswith("Config")]
  assert all("Attributes" in c.__doc__ or "Attributes:" in c.__doc__ for c in configs), configs
  assert "Args:" in ops.selective_scan.__doc__ and "Returns:" in ops.selective_scan.__doc__
  hints = typing.get_type_hints(ops.selective_scan)
  assert set(hints) >= {"u", "delta", "A", "B", "C", "method", "return"}
  assert (pathlib.Path(inn_jax.__file__).parent / "py.typed").is_file()


@pytest.mark.parametrize("explicit", [False, True], ids=["auto", "explicit"])
@pytest.mark.parametrize("mesh_shape", [(2, 2), pytest.param((1, 4), marks=pytest.mark.slow)])
def test_collectives_are_the_same_on_explicit_and_auto_meshes(explicit, mesh_shape):
  """Forward and gradient on a mesh of either axis type: on the neuron axis only one key/value
  all-gather per layer (its reduce-scatter backward) and all-reduces; no all-to-all, no permute,
  no gather of a whole population."""
  import collections
  from tests.build import sharded_inn
  from tests.test_train_mesh import collectives
  mesh = jax.make_mesh(mesh_shape, ("data", "neuron"),
                       axis_types=(AxisType.Explicit if explicit else AxisType.Auto,) * 2)
  x = tokens(8, 16)
  with jax.set_mesh(mesh), sharding.axis_rules(sharding.RULES):
    model = sharded_inn(CFG, mesh)
    compiled = nnx.jit(nnx.value_and_grad(loss)).lower(
        model, jax.device_put(x, P("data"))).compile()
  found = collectives(compiled.as_text())
  kinds = collections.Counter(kind for kind, _ in found)
  b = 8 // mesh_shape[0]
  kv = (b, CFG.n_neurons, 16, 2, 2, 8)  # All N neurons' keys and values of this device's rows.
  assert set(kinds) <= {"all-gather", "reduce-scatter", "all-reduce"}, kinds
  assert kinds["all-gather"] == kinds["reduce-scatter"] == CFG.n_layers, kinds
  assert all(shapes == [kv] for kind, shapes in found if kind == "all-gather"), found


# ------------------------------------------- issue 33, item 6: the package's own namespace

def test_the_package_names_its_modules_and_imports_them_on_use():
  """`import inn_jax; inn_jax.sharding` works without importing the submodule first, every
  name in __all__ resolves, and the import itself loads no JAX."""
  import subprocess
  import sys
  code = ("import sys, inn_jax\n"
          "assert 'jax' not in sys.modules, 'import inn_jax loaded jax'\n"
          "assert inn_jax.sharding.RULES and callable(inn_jax.load)\n"
          "assert {'load', 'models', 'nn', 'ops', 'sharding', 'sample', 'data', 'train'} <= "
          "set(inn_jax.__all__)\n"
          "[getattr(inn_jax, n) for n in inn_jax.__all__]\n"
          "assert set(inn_jax.__all__) <= set(dir(inn_jax))\n"
          "try:\n  inn_jax.no_such_module\nexcept AttributeError as e:\n  print(e)\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "module 'inn_jax' has no attribute 'no_such_module'"


def test_every_module_of_the_package_is_reachable_from_it():
  """A module added to the package is named in its library or its tools (inn_jax.X works)."""
  import pkgutil
  import inn_jax
  modules = {m.name for m in pkgutil.iter_modules(inn_jax.__path__)}
  assert modules == set(inn_jax._LIBRARY) | set(inn_jax._TOOLS)
