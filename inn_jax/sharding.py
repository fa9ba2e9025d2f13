"""Sharding by name: logical axes on parameters and activations, one rules table to the mesh.

Logical axes. Activations that carry the population (h_BNLD, and every array with leading
(B, N) axes) are ("batch", "neurons", ...); a per-neuron parameter (`NeuronParam`, leading axis
N) is ("neurons", None, ...) and records it as NNX sharding metadata (`out_sharding`), so that
`nnx.get_partition_spec(nnx.state(model))` sees it; every other parameter is replicated.

Rules. `RULES` maps logical names to mesh axes: ours, (("batch", "data"), ("neurons",
"neuron")), for the trainer's (data, neuron) mesh. A mesh with other axis names works by passing
rules, e.g.

    mesh = jax.make_mesh((2, 2), ("batch", "model"))
    with jax.set_mesh(mesh), inn_jax.sharding.axis_rules((("batch", "batch"),
                                                           ("neurons", "model"))):
      logits = nnx.jit(lambda m, x: m(x))(model, tokens)

`axis_rules` also sets flax's logical rules, so nnx.get_partition_spec gives mesh specs inside
it. One validation (`check_rules`) holds the table against the mesh and the shapes it splits,
so that nothing is silently replicated: a logical name that is not one of LOGICAL (a typo), a
rule whose mesh axis the mesh lacks, and a size its mesh axis does not divide (N = 3 neurons over
an axis of 2, a batch of 3) are errors naming the rule and the fix. A mesh of one device is
exempt from the mesh checks (there is nothing to split).

Meshes with Auto and with Explicit axes both work: `constrain` uses with_sharding_constraint on
an Auto mesh and reshard on an Explicit one; `take_rows` gathers embedding rows with the
out_sharding an Explicit mesh asks for. With no mesh (jax.set_mesh) nothing is constrained, so
the same model code runs on one CPU and on a pod.
"""

from __future__ import annotations

import contextlib
import contextvars

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

DATA, NEURON = "data", "neuron"  # The trainer's mesh axes (inn_jax.train.mesh).
MESH_AXES = (DATA, NEURON)
BATCH, NEURONS = "batch", "neurons"  # Logical axes.
POPULATION = (BATCH, NEURONS)  # The leading (B, N) axes of every population activation.
LOGICAL = POPULATION  # Every logical axis name the package uses.
RULES = ((BATCH, DATA), (NEURONS, NEURON))

_rules = contextvars.ContextVar("inn_jax_axis_rules", default=RULES)


class NeuronParam(nnx.Param):
  """A parameter with one slice per neuron along its leading axis: logical axes ("neurons",
  None, ...), split over whatever mesh axis the rules give "neurons"."""

  def __init__(self, value, **metadata):
    metadata.setdefault("out_sharding", (NEURONS,) + (None,) * (value.ndim - 1))
    # Flax's eager sharding needs a mesh and its own rules; ours places the value below, as its
    # metadata (and so nnx.get_partition_spec) says, wherever a mesh is set.
    metadata.setdefault("eager_sharding", False)
    if isinstance(value, jax.Array) and _mesh() is not None:
      value = constrain(value, *metadata["out_sharding"])
    super().__init__(value, **metadata)


def rules() -> tuple:
  return _rules.get()


@contextlib.contextmanager
def axis_rules(new_rules):
  """Within: logical axes map to mesh axes by `new_rules` ((logical, mesh axis or None), ...),
  here and in flax (nnx.get_partition_spec). The logical names are checked here; the mesh axes
  against each mesh they meet (check_rules)."""
  new_rules = tuple((str(a), b) for a, b in new_rules)
  _check_names(new_rules)
  token = _rules.set(new_rules)
  try:
    with nnx.logical_axis_rules(new_rules):
      yield new_rules
  finally:
    _rules.reset(token)


def mesh_axes(logical) -> tuple:
  """Mesh axis (or None) of each logical name under the current rules."""
  table = dict(rules())
  return tuple(table.get(name) if name is not None else None for name in logical)


def _mesh():
  mesh = jax.sharding.get_abstract_mesh()
  return None if mesh.empty else mesh


def explicit() -> bool:
  """True under an Explicit mesh: every array's type carries its sharding (axes of size 1
  included), and reshapes that merge split axes need an out_sharding."""
  mesh = _mesh()
  return mesh is not None and mesh.are_all_axes_explicit


def one_device() -> bool:
  """True where arrays are whole and carry no layout to keep: no mesh, or an Auto mesh of one
  device; their leading axes may then be merged freely."""
  mesh = _mesh()
  return mesh is None or (mesh.size == 1 and not mesh.are_all_axes_explicit)


_FIX = ("map the logical axes to your mesh with inn_jax.sharding.axis_rules((('batch', "
        "<data axis or None>), ('neurons', <model axis or None>)))")


def _check_names(table) -> None:
  names = [a for a, _ in table]
  for a in names:
    if a not in LOGICAL:
      raise ValueError(f"sharding rules {table}: {a!r} is not a logical axis of inn_jax (they "
                       f"are {LOGICAL}); {_FIX}.")
    if names.count(a) > 1:
      raise ValueError(f"sharding rules {table}: {a!r} is mapped twice; give each logical axis "
                       "one rule.")


def check_rules(mesh=None) -> None:
  """Raises unless the current rules fit `mesh` (default: the current mesh): every logical name
  one of LOGICAL, once; on a mesh of several devices, every rule's mesh axis (None: replicated)
  one of the mesh's. A rule naming an axis the mesh lacks would replicate silently."""
  table = rules()
  _check_names(table)
  mesh = _mesh() if mesh is None else mesh
  if mesh is None or mesh.size == 1:
    return
  for a, b in table:
    if b is not None and b not in mesh.axis_names:
      raise ValueError(f"sharding rule ({a!r}, {b!r}): the mesh has no axis {b!r} (its axes: "
                       f"{tuple(mesh.axis_names)}, rules {table}); {_FIX}.")


check_mesh = check_rules  # The name the models' layout code uses.


def spec(x_shape, logical, mesh=None) -> P:
  """The PartitionSpec of an array of `x_shape` with leading `logical` axes on `mesh` (default:
  the current one; each logical axis's mesh axis; None without a mesh). Raises (check_rules) when
  the rules do not fit the mesh, and when a mesh axis of several devices does not divide its
  size."""
  mesh = _mesh() if mesh is None else mesh
  if mesh is None:
    return P(*(None for _ in zip(logical, x_shape)))
  check_rules(mesh)
  out = []
  for logical_name, name, n in zip(logical, mesh_axes(logical), x_shape):
    size = mesh.shape[name] if name is not None and name in mesh.axis_names else 1
    if n % size:
      raise ValueError(f"{logical_name!r} of size {n} does not divide over mesh axis {name!r} of "
                       f"{size} devices (it would run replicated): make it a multiple of "
                       f"{size}, or map {logical_name!r} to None with "
                       "inn_jax.sharding.axis_rules.")
    out.append(name if name in mesh.axis_names else None)
  return P(*out)


def constrain(x, *logical):
  """x laid out by its leading `logical` axes on the current mesh (the rest replicated):
  with_sharding_constraint on an Auto mesh, reshard on an Explicit one; x itself without a mesh."""
  mesh = _mesh()
  if mesh is None:
    return x
  check_mesh(mesh)
  s = spec(x.shape, logical)
  if mesh.are_all_axes_explicit:
    return jax.sharding.reshard(x, s)
  return jax.lax.with_sharding_constraint(x, s)


def population(x):
  """x with leading (B, N) axes, split batch over the batch axis and neurons over the neurons'."""
  return constrain(x, *POPULATION)


def take_rows(table_VD, ids):
  """table_VD[ids]: on an Explicit mesh with the out_sharding it asks for (ids' own, then D
  replicated); a plain gather elsewhere."""
  mesh = _mesh()
  if mesh is None or not mesh.are_all_axes_explicit:
    return table_VD[ids]
  ids_spec = tuple(jax.typeof(ids).sharding.spec)
  ids_spec += (None,) * (ids.ndim - len(ids_spec))
  return table_VD.at[ids].get(out_sharding=P(*ids_spec, None))


def population_axes(lead: tuple[int, ...]) -> tuple[str | None, ...]:
  """The mesh axes of leading axes `lead` ((B,) or (B, N), more are not split) on the current
  mesh: the batch's and the neurons' mesh axes (None: not split; a size the axis does not divide
  raises, as spec). () when nothing is split: no mesh, or an Auto one whose axes here have size
  1 (on an Explicit mesh such axes stay named: arrays carry them in their types, so the callers'
  per-device code runs under shard_map, where arrays are local)."""
  mesh = _mesh()
  if mesh is None:
    return ()
  axes = tuple(spec(lead[:2], POPULATION))
  if all(a is None or mesh.shape[a] == 1 for a in axes) and not mesh.are_all_axes_explicit:
    return ()
  # Axes of size 1 stay named: a shard_map would otherwise sum cotangents over them.
  return axes + (None,) * (len(lead) - len(axes))


def population_map(fn, *xs):
  """fn(gather, *xs) on each device's part of the population.

  Every x has leading (B, N) axes and is split as the population (see `population`), and so is
  every output. gather(x) is x for all N neurons of this device's batch rows: an all-gather
  over the neurons' mesh axis (its transpose, in the backward pass, a reduce-scatter) when the
  mesh splits the population, else x itself.
  """
  axes = population_axes(xs[0].shape[:2])
  if not axes:
    return fn(lambda x: x, *xs)
  neuron_axis = axes[1]
  split = neuron_axis is not None and _mesh().shape[neuron_axis] > 1
  gather = (lambda x: jax.lax.all_gather(x, neuron_axis, axis=1, tiled=True)) if split else (
      lambda x: x)
  s = P(*axes)
  return jax.shard_map(lambda *a: fn(gather, *a), in_specs=s, out_specs=s)(*laid_out(xs, s))


def replicate(x_B, n: int):
  """x (B, ...) copied to N neurons, (B, N, ...), laid out as the population. On an Explicit
  mesh the copy is made in place (broadcast with its out_sharding), so that its transpose is
  one reduction over the neuron axis rather than a gather of every neuron's cotangent."""
  shape = (x_B.shape[0], n, *x_B.shape[1:])
  mesh = _mesh()
  if mesh is not None and mesh.are_all_axes_explicit:
    check_mesh(mesh)
    return jnp.broadcast_to(x_B[:, None], shape, out_sharding=spec(shape, POPULATION))
  return population(jnp.broadcast_to(x_B[:, None], shape))


def population_mean(x_BN):
  """x's mean over its neuron axis (axis 1). On an Explicit mesh that splits the neurons, as a
  sum per device and one all-reduce (jnp.mean would gather every neuron's array first); on an
  Auto mesh XLA's partitioner does this itself."""
  mesh = _mesh()
  axes = population_axes(x_BN.shape[:2])
  if mesh is None or not mesh.are_all_axes_explicit or not axes or axes[1] is None:
    return x_BN.mean(axis=1)
  n, neuron_axis = x_BN.shape[1], axes[1]
  spec_in = P(*axes)
  spec_out = P(axes[0])
  fn = lambda x: jax.lax.psum(x.sum(axis=1), neuron_axis) / n
  return jax.shard_map(fn, in_specs=spec_in, out_specs=spec_out)(laid_out(x_BN, spec_in))


def laid_out(tree, specs):
  """`tree` resharded to `specs` (a PartitionSpec, or a tree of them) on an Explicit mesh, where
  shard_map checks rather than makes its inputs' layout; `tree` itself elsewhere."""
  mesh = _mesh()
  if mesh is None or not mesh.are_all_axes_explicit:
    return tree
  if isinstance(specs, P):
    return jax.tree.map(lambda x: jax.sharding.reshard(x, specs), tree)
  return jax.tree.map(lambda x, p: jax.sharding.reshard(x, p), tree, specs)


def variable_specs(tree, mesh=None):
  """The PartitionSpec of every Variable in `tree` (parameters, or optimiser moments, which keep
  their parameter's type and metadata): its logical out_sharding under the current rules, checked
  against `mesh` (default: the current one) as `spec` checks (no silent replication), P() for
  the rest."""

  def one(x):
    if not isinstance(x, nnx.Variable):
      return P()
    logical = x.get_metadata().get("out_sharding") if isinstance(x, NeuronParam) else None
    if not logical:
      return x.replace(P())
    return x.replace(spec(x.get_value().shape, logical, mesh))

  return jax.tree.map(one, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def population_sum(fn, *xs, logical):
  """fn(*xs) summed over the whole population: fn computes, from this device's neurons, partial
  sums with the batch as its leading axis and no neuron axis; one all-reduce over the neurons'
  mesh axis completes them. logical[i] names the leading axes of xs[i] ("batch", "neurons" or
  None each, the rest unsplit). Without a mesh that splits the population, fn(*xs) itself."""
  mesh = _mesh()
  if mesh is None:
    return fn(*xs)
  specs = [spec(x.shape, names) for x, names in zip(xs, logical)]
  neuron_axis = next((a for s, names in zip(specs, logical) for a, n in zip(s, names)
                      if n == NEURONS and a is not None), None)
  batch_axis = next((a for s, names in zip(specs, logical) for a, n in zip(s, names)
                     if n == BATCH and a is not None), None)
  if neuron_axis is None and (batch_axis is None or mesh.shape[batch_axis] == 1):
    return fn(*xs)
  reduce = (lambda y: jax.lax.psum(y, neuron_axis)) if neuron_axis is not None else (lambda y: y)
  return jax.shard_map(lambda *a: reduce(fn(*a)), in_specs=tuple(specs),
                       out_specs=P(batch_axis))(*(laid_out(x, s) for x, s in zip(xs, specs)))
