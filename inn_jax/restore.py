"""`inn_jax.load`: a trained workdir -> (model, vocabulary, config), parameters only.

    model, vocab, config = inn_jax.load("workdirs/quickstart")             # best checkpoint
    model, vocab, config = inn_jax.load(w, step="latest", mesh=mesh)        # placed on a mesh
    ids = vocab.encode("the king "); text = vocab.decode(ids)

The model is built abstractly (nnx.eval_shape) from the workdir's config.json, and only the
checkpoint's "params" are read (Orbax partial restore: the optimiser state stays on disk), onto
one device or onto `mesh` as the sharding rules lay out per-neuron parameters. The checkpoint
is the trainer's: plain Orbax can read its parameters too (the whole recipe, run by the tests,
is examples/library.py's plain_orbax):

    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          nnx.to_pure_dict(nnx.state(abstract_model, nnx.Param)))
    out = ocp.CheckpointManager(workdir / "best").restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(item={"params": target}, partial_restore=True,
            restore_args=ocp.checkpoint_utils.construct_restore_args({"params": target}))))
    nnx.replace_by_pure_dict(params_state, out.state["params"])

Workdirs of earlier versions (parameters stored with their Variable wrappers) load as well.
"""

from __future__ import annotations

import json
import pathlib

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from inn_jax import data, sharding
from inn_jax.models import build_model

CONFIG_FILE, VOCAB_FILE = "config.json", "vocab.json"  # As inn_jax.train.workdir writes them.


def _tupled(tree):
  """JSON lists back to the tuples the config held (ConfigDict fields keep their types)."""
  if isinstance(tree, dict):
    return {k: _tupled(v) for k, v in tree.items()}
  return tuple(_tupled(v) for v in tree) if isinstance(tree, list) else tree


def read_config(workdir) -> tuple[ml_collections.ConfigDict, int]:
  """(the run's config, its vocabulary size) from <workdir>/config.json."""
  path = pathlib.Path(workdir) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found: give a training workdir (train.py writes "
                            f"{CONFIG_FILE} there).")
  saved = json.loads(path.read_text())
  vocab_size = saved.pop("vocab_size")
  saved.pop("resolved", None)
  config = ml_collections.ConfigDict(_tupled(saved))
  config.workdir = str(workdir)
  return config, vocab_size


def _step(manager: ocp.CheckpointManager, step) -> int:
  steps = sorted(manager.all_steps())
  if not steps:
    raise FileNotFoundError(f"no checkpoint in {manager.directory}; train first.")
  if step in ("best", "latest"):
    return steps[-1]
  if step not in steps:
    raise FileNotFoundError(f"step {step} is not in {manager.directory} (it holds {steps}).")
  return int(step)


def load(workdir, step: int | str = "best", mesh: jax.sharding.Mesh | None = None):
  """(model in eval mode, vocabulary, the run's config) of a training workdir (load_step's,
  without the step)."""
  return load_step(workdir, step, mesh)[:3]


def load_step(workdir, step: int | str = "best", mesh: jax.sharding.Mesh | None = None):
  """(model in eval mode, vocabulary, the run's config, the checkpoint's step) of a workdir.

  Args:
    workdir: a training workdir (config.json, vocab.json, checkpoints/, best/).
    step: "best" (the best checkpoint by validation, else the latest), "latest", or a step in
      checkpoints/.
    mesh: place the parameters on this mesh (per-neuron parameters split by the sharding rules
      of inn_jax.sharding, the rest replicated); None: the default device, uncommitted (as new
      arrays are), so the model also runs later under a mesh.
  """
  workdir = pathlib.Path(workdir)
  config, vocab_size = read_config(workdir)
  vocab_file = workdir / VOCAB_FILE
  if not vocab_file.is_file():
    raise FileNotFoundError(f"{vocab_file} not found (a workdir of an early version): load its "
                            "corpus with inn_jax.data.load_corpus(config.data) for the vocabulary.")
  vocab = data.vocab_from_json(vocab_file.read_text())
  if vocab.size != vocab_size:
    raise ValueError(f"{vocab_file} has {vocab.size} symbols, {CONFIG_FILE} says {vocab_size}.")
  build = lambda: build_model(config.model, vocab_size,
                              nnx.Rngs(params=config.seed, dropout=config.seed + 1))
  graphdef, params, _ = nnx.split(nnx.eval_shape(build), nnx.Param, ...)
  # The rest (dropout streams, counters) for real: compiled, the parameters' initialisation is
  # dead code and does not run.
  rest = jax.jit(lambda: nnx.split(build(), nnx.Param, ...)[2])()
  if mesh is None:
    placed = jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]),
                          nnx.to_pure_dict(params))
  else:
    with jax.set_mesh(mesh):
      specs = sharding.variable_specs(params)
    placed = jax.tree.map(lambda s: jax.sharding.NamedSharding(mesh, s), nnx.to_pure_dict(specs))
  target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        nnx.to_pure_dict(params), placed)
  directory = workdir / "best"
  if step != "best" or not (directory.is_dir() and any(p.name.isdigit()
                                                      for p in directory.iterdir())):
    directory = workdir / "checkpoints"
  manager = ocp.CheckpointManager(directory.absolute())
  try:
    at = _step(manager, step)
    restored = None
    # Plain parameters (this version), then the Variable-wrapped ones of earlier versions.
    for item in (target, jax.tree.map(lambda t: {"value": t}, target)):
      try:
        out = manager.restore(at, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item={"params": item}, partial_restore=True,
            restore_args=ocp.checkpoint_utils.construct_restore_args({"params": item}))))
      except (ValueError, TypeError):  # Orbax's tree mismatch: try the other layout.
        continue
      restored = out.state["params"]
      break
  finally:
    manager.close()
  if restored is None:
    raise ValueError(f"the parameters in {directory}/{at} do not fit the model of "
                     f"{workdir / CONFIG_FILE}: restore with the version that wrote them.")
  restored = jax.tree.map(lambda x: x["value"] if isinstance(x, dict) else x, restored,
                          is_leaf=lambda x: isinstance(x, dict) and set(x) == {"value"})
  if mesh is None:  # Uncommitted, as freshly made arrays are: usable later under any mesh.
    restored = jax.tree.map(lambda x: jax.device_put(np.asarray(x)), restored)
  nnx.replace_by_pure_dict(params, restored)
  model = nnx.merge(graphdef, params, rest)
  model.eval()
  return model, vocab, config, at
