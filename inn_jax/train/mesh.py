"""The device mesh and every sharding the training loop uses, declared once.

Axes and specs come from inn_jax.sharding: DATA splits the batch, NEURON the INN's population
(the model constrains its activations). Per-neuron parameters and their optimiser moments are split
over the neuron axis; every other parameter is replicated: the paper's models have a few million
parameters, so data parallelism over them costs one all-reduce.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from inn_jax.sharding import DATA, MESH_AXES, variable_specs


def mesh_shape(cfg, n_devices: int) -> tuple[int, int]:
  """(data, neuron) sizes from config.mesh; data=-1 takes every device the neuron axis leaves."""
  neuron = cfg.neuron
  data = cfg.data if cfg.data != -1 else n_devices // max(neuron, 1)
  return data, neuron


def make_mesh(cfg, devices=None) -> jax.sharding.Mesh:
  """A (data, neuron) mesh over the first data x neuron devices (all of them by default)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(cfg, len(devices))
  if shape[0] * shape[1] > len(devices) or min(shape) < 1:
    raise ValueError(f"mesh {dict(zip(MESH_AXES, shape))} needs {shape[0] * shape[1]} devices, "
                     f"found {len(devices)}; set config.mesh.data and config.mesh.neuron.")
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 2,
                       devices=devices[:shape[0] * shape[1]])


def replicated(mesh) -> NamedSharding:
  """Parameters, optimiser state, step and scalars."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh) -> NamedSharding:
  """Token batches (B, L): rows split over the data axis."""
  return NamedSharding(mesh, P(DATA))


def state_shardings(state, mesh):
  """The sharding tree of a training state or of parameters (see the module docstring)."""
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), variable_specs(state, mesh))


def global_batch(array_BL: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A global array from the full host batch; each process places only its own shards.

  Every process computes the same batch (the streams are deterministic in the step), so this is
  correct on one host and on several.
  """
  return jax.make_array_from_callback(array_BL.shape, sharding, lambda index: array_BL[index])


def fetch(tree):
  """Host numpy copies of replicated arrays; works when other processes hold devices too."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


__all__ = ["batch_sharding", "fetch", "global_batch", "make_mesh", "mesh_shape",
           "replicated", "state_shardings"]
