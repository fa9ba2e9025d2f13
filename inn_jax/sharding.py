"""Mesh axis names and activation sharding constraints, declared once for the whole package.

The mesh has a data axis (the batch) and a neuron axis (the INN's population). Models call
`constrain(x, ...)` with one entry per array axis: a mesh axis name, a tuple of names for a folded
axis such as (B*N), or None. Outside a mesh (`jax.set_mesh`) it does nothing, so the same model
code runs on one CPU and on a pod.
"""

import jax
from jax.sharding import PartitionSpec as P

DATA = "data"
NEURON = "neuron"
MESH_AXES = (DATA, NEURON)


def constrain(x, *axes):
  """Pins x's layout to `axes` on the current mesh; mesh axes it lacks are dropped."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  names = set(mesh.axis_names)

  def keep(entry):
    entry = tuple(a for a in ((entry,) if isinstance(entry, str) else entry or ()) if a in names)
    return entry[0] if len(entry) == 1 else (entry or None)

  return jax.lax.with_sharding_constraint(x, P(*(keep(a) for a in axes)))
