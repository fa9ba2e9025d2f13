"""inn_jax as a library, end to end (tests/test_examples.py runs it; about a minute on 2 CPUs):

  1. build an INN from its typed config and train it in one's own optax loop, dropout keys passed
     to each call (the step is a pure function: nnx.jit, or jax.grad over nnx.split state);
  2. run it on a mesh of one's own axis names (Explicit axes, JAX's default), the logical axes
     mapped by a rules table: it computes what one device computes;
  3. train with the package's trainer on a corpus of arrays in memory, then load the workdir with
     inn_jax.load (parameters only) and sample from it.

    python examples/library.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import PartitionSpec as P

import inn_jax
from inn_jax import data, sample, sharding
from inn_jax.models import INN, INNConfig
from inn_jax.nn import CommunicationConfig, MambaConfig

TEXT = "the king and the queen of the north sat in the hall of the king " * 400


def own_loop(steps: int = 30):
  """A small INN trained by hand: nnx.Optimizer, dropout keys per step."""
  vocab = data.CharVocab(sorted(set(TEXT)))
  ids = vocab.encode(TEXT)
  config = INNConfig(d_model=32, n_layers=2, n_neurons=4,
                     memory=MambaConfig(expand=None, neuron_params="full", d_state=4),
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


def own_mesh(model, vocab):
  """The trained model on a (batch, model) mesh: the same logits as on one device."""
  model.eval()
  x_BL = jnp.asarray(vocab.encode("the king and the queen ")[None].repeat(4, 0))
  want = model(x_BL)
  if jax.device_count() < 4:
    print("own mesh: skipped (needs 4 devices; XLA_FLAGS=--xla_force_host_platform_device_count=4"
          " fakes them on a CPU)")
    return
  mesh = jax.make_mesh((2, 2), ("batch", "model"))  # Explicit axes: JAX's default.
  rules = (("batch", "batch"), ("neurons", "model"))
  with jax.set_mesh(mesh), sharding.axis_rules(rules):
    placed = nnx.clone(model)
    state = nnx.state(placed)
    nnx.update(placed, jax.device_put(state, nnx.get_named_sharding(state, mesh)))
    got = nnx.jit(lambda m, x: m(x))(placed, jax.device_put(x_BL, P("batch")))
  kernel = placed.layers[0].memory.in_proj.kernel[...]
  print(f"own mesh: per-neuron kernel split {kernel.sharding.spec}, max |logits - one device| "
        f"{float(jnp.abs(got - want).max()):.2e}")
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


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
  out = sample.Sampler(loaded)(loaded_vocab.encode("the ")[None], 40, temperature=0.0)
  print("sample:", repr("the " + loaded_vocab.decode(np.asarray(out.tokens_BL[0]))))


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
