"""The mesh's axes and every sharding of the INN's arrays, declared once for the whole package.

The mesh has a data axis (the batch) and a neuron axis (the INN's population). Activations that
carry the population, h_BNLD and everything else with leading (B, N) axes, are split over both;
per-neuron parameters (`NeuronParam`, leading axis N) over the neuron axis; everything else is
replicated. Outside a mesh (`jax.set_mesh`) `constrain` does nothing, so the same model code runs
on one CPU and on a pod.
"""

import jax
from flax import nnx
from jax.sharding import PartitionSpec as P

DATA = "data"
NEURON = "neuron"
MESH_AXES = (DATA, NEURON)
POPULATION = (DATA, NEURON)  # The leading (B, N) axes of every population activation.


class NeuronParam(nnx.Param):
  """A parameter with one slice per neuron along its leading axis: split over the neuron axis."""


def constrain(x, *axes):
  """Pins x's layout to `axes` on the current mesh (one entry per leading axis: a mesh axis name
  or None; the rest replicated); mesh axes the mesh lacks are dropped."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  axes = tuple(a if a in mesh.axis_names else None for a in axes)
  return jax.lax.with_sharding_constraint(x, P(*axes))


def population(x):
  """x with leading (B, N) axes, split batch over data and neurons over neuron."""
  return constrain(x, *POPULATION)


def variable_specs(tree):
  """The PartitionSpec of every Variable in `tree` (parameters, or optimiser moments, which keep
  their parameter's type): P(NEURON) for a NeuronParam, P() for the rest."""
  def spec(x):
    if isinstance(x, NeuronParam):
      return x.replace(P(NEURON))
    return x.replace(P()) if isinstance(x, nnx.Variable) else P()

  return jax.tree.map(spec, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))
