"""inn_jax as a library, end to end (tests/test_examples.py runs it; about a minute on 2 CPUs):

  1. build an INN from its typed config and train it in one's own optax loop, dropout keys passed
     to each call (the step is a pure function: nnx.jit, or jax.grad over nnx.split state);
  2. run it on a mesh of one's own axis names, with Explicit axes (JAX's default) and with Auto
     ones, the logical axes mapped by a rules table: it computes what one device computes;
  3. train with the package's trainer on a corpus of arrays in memory, then load the workdir with
     inn_jax.load (parameters only), onto one device and onto a mesh, read the same parameters
     with plain Orbax, and sample from it with a key, a nucleus and a stop token.

    python examples/library.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

import inn_jax
from inn_jax import data, sample, sharding
from inn_jax.models import INN, INNConfig, build_model
from inn_jax.nn import CommunicationConfig, MambaConfig

TEXT = "the king and the queen of the north sat in the hall of the king " * 400


def own_loop(steps: int = 30):
  """A small INN trained by hand: nnx.Optimizer, dropout keys per step."""
  vocab = data.CharVocab(sorted(set(TEXT)))
  ids = vocab.encode(TEXT)
  # A memory field left unset keeps the INN's default form (each neuron its own memory).
  config = INNConfig(d_model=32, n_layers=2, n_neurons=4, memory=MambaConfig(d_state=4),
                     communication=CommunicationConfig(n_heads=4, dropout=0.1))
  model = INN(config, vocab.size, rngs=nnx.Rngs(params=0))  # No dropout stream: keys per call.
  optimizer = nnx.Optimizer(model, optax.adamw(1e-2), wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, x_BL, y_BL, key):
    def loss(model):
      logits_BLV = model(x_BL, rngs=key)
      return optax.softmax_cross_entropy_with_integer_labels(logits_BLV, y_BL).mean()
    value, grads = nnx.value_and_grad(loss)(model)
    optimizer.update(model, grads)
    return value

  stream = data.TrainStream(ids, batch_size=8, seq_len=32)
  losses = [float(step(model, optimizer, *stream.batch(s), jax.random.key(s)))
            for s in range(steps)]
  print(f"own loop: loss {losses[0]:.3f} -> {losses[-1]:.3f} in {steps} steps")
  assert losses[-1] < losses[0]
  return model, vocab


RULES = (("batch", "batch"), ("neurons", "model"))  # Our logical axes -> the mesh's names.


def own_mesh(model, vocab):
  """The trained model on a (batch, model) mesh, Explicit and Auto axes: the same logits as on
  one device; and a model built eagerly under the mesh lies as its metadata says."""
  model.eval()
  x_BL = jnp.asarray(vocab.encode("the king and the queen ")[None].repeat(4, 0))
  want = model(x_BL)
  if jax.device_count() < 4:
    print("own mesh: skipped (needs 4 devices; XLA_FLAGS=--xla_force_host_platform_device_count=4"
          " fakes them on a CPU)")
    return
  for axis_type in (AxisType.Explicit, AxisType.Auto):  # Explicit: JAX's default.
    mesh = jax.make_mesh((2, 2), ("batch", "model"), axis_types=(axis_type,) * 2)
    with jax.set_mesh(mesh), sharding.axis_rules(RULES):
      placed = nnx.clone(model)  # A trained model, placed by its parameters' logical axes.
      state = nnx.state(placed)
      nnx.update(placed, jax.device_put(state, nnx.get_named_sharding(state, mesh)))
      got = nnx.jit(lambda m, x: m(x))(placed, jax.device_put(x_BL, P("batch")))
      fresh = INN(model.config, vocab.size, rngs=nnx.Rngs(0))  # Built under the mesh: split.
    kernel = placed.layers[0].memory.in_proj.kernel[...]
    assert fresh.layers[0].memory.in_proj.kernel[...].sharding.is_equivalent_to(
        kernel.sharding, kernel.ndim)
    print(f"own mesh ({axis_type.name}): per-neuron kernel split {kernel.sharding.spec}, "
          f"max |logits - one device| {float(jnp.abs(got - want).max()):.2e}")
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def plain_orbax(workdir: pathlib.Path):
  """The workdir's parameters with Orbax and NNX alone, as inn_jax.load reads them: the abstract
  model from the run's config, a target with each array's sharding (so Orbax need not guess it),
  a partial restore of "params" only."""
  config, vocab_size = inn_jax.restore.read_config(workdir)
  build = lambda: build_model(config.model, vocab_size, nnx.Rngs(0))
  graphdef, params, _ = nnx.split(nnx.eval_shape(build), nnx.Param, ...)
  rest = jax.jit(lambda: nnx.split(build(), nnx.Param, ...)[2])()  # RNG streams, for real.
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # Or NamedSharding(mesh, spec).
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                        nnx.to_pure_dict(params))
  manager = ocp.CheckpointManager((workdir / "best").absolute())
  out = manager.restore(manager.latest_step(), args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore(
          item={"params": target}, partial_restore=True,
          restore_args=ocp.checkpoint_utils.construct_restore_args({"params": target}))))
  manager.close()
  nnx.replace_by_pure_dict(params, out.state["params"])
  model = nnx.merge(graphdef, params, rest)
  model.eval()
  return model


def trainer_then_load(workdir: pathlib.Path):
  """inn_jax.train.run on arrays in memory, a typed model config; then inn_jax.load + sample."""
  from inn_jax import train
  vocab = data.CharVocab(sorted(set(TEXT)))
  ids = vocab.encode(TEXT)
  n = len(ids)
  corpus = data.corpus_from_arrays(ids[:int(0.9 * n)], ids[int(0.9 * n):int(0.95 * n)],
                                   ids[int(0.95 * n):], vocab)
  config = train.load("quickstart")  # A config shipped in the package, by name.
  config.workdir = str(workdir)
  config.data.update(batch_size=8, seq_len=32, eval_batch_size=8)
  config.train.update(steps=20, eval_every=10, save_every=10, log_every=5, eval_windows=2)
  config.log.update(tensorboard=False, progress=False)
  model = INNConfig(d_model=32, n_layers=1, n_neurons=4,
                    memory=MambaConfig(expand=None, neuron_params="full", d_state=4),
                    communication=CommunicationConfig(n_heads=4, dropout=0.0))
  results = train.run(config, model=model, corpus=corpus)
  print(f"trainer: valid BPC {results['valid_bpc']:.3f} after {results['steps']} steps")
  loaded, loaded_vocab, run_config = inn_jax.load(workdir)
  assert loaded.config == model and run_config.model.kind == "inn"
  orbax_model = plain_orbax(workdir)
  chex.assert_trees_all_equal(nnx.to_pure_dict(nnx.state(orbax_model, nnx.Param)),
                              nnx.to_pure_dict(nnx.state(loaded, nnx.Param)))
  print("plain orbax: the same parameters as inn_jax.load")
  if jax.device_count() >= 4:  # Onto a mesh of one's own names: the neurons split over "model".
    mesh = jax.make_mesh((2, 2), ("batch", "model"))
    with sharding.axis_rules(RULES):
      on_mesh, _, _ = inn_jax.load(workdir, mesh=mesh)
    print("load onto a mesh: per-neuron kernel split",
          on_mesh.layers[0].memory.in_proj.kernel[...].sharding.spec)
  sampler = sample.Sampler(loaded)
  prompt = loaded_vocab.encode("the ")[None]
  out = sampler(prompt, 40, temperature=0.0)
  print("sample:", repr("the " + loaded_vocab.decode(np.asarray(out.tokens_BL[0]))))
  stop = int(loaded_vocab.encode(" ")[0])  # Up to the end of the first word.
  out = sampler(prompt.repeat(3, 0), 40, temperature=0.8, top_p=0.9, stop=stop,
                key=jax.random.key(0))
  words = [loaded_vocab.decode(np.asarray(t[:n])) for t, n in zip(out.tokens_BL, out.lengths_B)]
  print("sampled words (key, top_p 0.9, stop at ' '):", words)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", help="the trainer's workdir (default: a temporary folder)")
  args = p.parse_args(argv)
  model, vocab = own_loop()
  own_mesh(model, vocab)
  with tempfile.TemporaryDirectory() as tmp:
    trainer_then_load(pathlib.Path(args.workdir or pathlib.Path(tmp) / "run"))


if __name__ == "__main__":
  main()
