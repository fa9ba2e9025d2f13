"""inn_jax: Intelligent Neural Networks in JAX / Flax NNX.

Shape notation, used in names throughout (``x_BxLxD`` style, written compactly as ``x_BLD``);
each letter has one meaning:

  B  batch (rows of token windows)      L  time steps (sequence, chunk, prompt or sample length)
  N  neurons                            D  model width (d_model)
  E  a Mamba's inner width (expand * D) S  SSM state size (d_state)
  R  dt rank                            W  conv window (d_conv)
  V  vocabulary                         H  attention heads
  K  attention head size (D / H)        F  Transformer feed-forward width
  U  LSTM hidden units                  G  LSTM gate width (4 U)
  I  LSTM input width                   P  attention key positions (a Transformer's cache)
  T  tokens flattened over batch and time (B * L)
  M  rows of a scan: its leading axes flattened (B * N, or B)
  J  chunks of time                     Q  blocks (of rows, or of E in a kernel)

A per-neuron parameter (`NeuronParam`: one slice per neuron along a leading N axis) is named by
one neuron's shape: `conv_WE` is (N, W, E) when each neuron owns it.
Lower case is a part of that axis: ``n`` this device's neurons, ``b`` the rows of one block,
``d`` half the model width. Digits are literal sizes (``kv_BNL2HK``: keys and values).
Activations keep the neuron axis from end to end (``h_BNLD``); a scan forms rows from its
leading axes inside the op, on each device's shard.
"""

import importlib

__version__ = "0.1.0"

# The library's modules, imported on first use (PEP 562): `import inn_jax` stays light (no JAX)
# and `inn_jax.sharding` works without importing it first.
_LIBRARY = ("activations", "analyze", "connectivity", "data", "models", "ngram", "nn", "ops",
            "restore", "sample", "sharding", "summary", "train", "typed")
# The science and tooling (studies, reports, benchmarks' helpers): reachable the same way.
_TOOLS = ("bench", "caveats", "claims", "configs", "plots", "population_rules", "report",
          "roofline", "stats", "studies", "verdicts")
__all__ = ["__version__", "load", *_LIBRARY]


def load(workdir, step="best", mesh=None):
  """(model, vocabulary, config) of a trained workdir: inn_jax.restore.load."""
  from inn_jax import restore  # Imported on use: `import inn_jax` stays light.
  return restore.load(workdir, step=step, mesh=mesh)


def __getattr__(name):
  if name in _LIBRARY or name in _TOOLS:
    return importlib.import_module(f"inn_jax.{name}")
  raise AttributeError(f"module 'inn_jax' has no attribute {name!r}")


def __dir__():
  return sorted({*globals(), *_LIBRARY, *_TOOLS})
