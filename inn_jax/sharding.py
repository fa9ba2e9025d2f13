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


def population_axes(lead: tuple[int, ...]) -> tuple[str | None, ...]:
  """The mesh axes of leading axes `lead` ((B,) or (B, N), more are not split) on the current
  mesh: data for the batch, neuron for the neurons; None where the mesh lacks the axis or its
  size does not divide. () when nothing is split (no mesh, or only axes of size 1)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return ()
  axes = tuple(a if a in mesh.axis_names and n % mesh.shape[a] == 0 else None
               for a, n in zip(POPULATION, lead))
  if all(a is None or mesh.shape[a] == 1 for a in axes):
    return ()
  # Axes of size 1 stay named: a shard_map would otherwise sum cotangents over them.
  return axes + (None,) * (len(lead) - len(axes))


def population_map(fn, *xs):
  """fn(gather, *xs) on each device's part of the population.

  Every x has leading (B, N) axes and is split as the population (batch over data, neurons over
  neuron), and so is every output. gather(x) is x for all N neurons of this device's batch rows:
  an all-gather over the neuron axis (its transpose, in the backward pass, a reduce-scatter)
  when the mesh splits the population, else x itself.
  """
  axes = population_axes(xs[0].shape[:2])
  if not axes:
    return fn(lambda x: x, *xs)
  split = axes[1] is not None and jax.sharding.get_abstract_mesh().shape[NEURON] > 1
  gather = lambda x: jax.lax.all_gather(x, NEURON, axis=1, tiled=True) if split else x
  spec = P(*axes)
  return jax.shard_map(lambda *a: fn(gather, *a), in_specs=spec, out_specs=spec)(*xs)


def variable_specs(tree):
  """The PartitionSpec of every Variable in `tree` (parameters, or optimiser moments, which keep
  their parameter's type): P(NEURON) for a NeuronParam, P() for the rest."""
  def spec(x):
    if isinstance(x, NeuronParam):
      return x.replace(P(NEURON))
    return x.replace(P()) if isinstance(x, nnx.Variable) else P()

  return jax.tree.map(spec, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))
