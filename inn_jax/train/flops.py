"""Matmul FLOPs counted from a jaxpr: what the model summary, results.json and bench report.

What is counted: 2*M*N*K for every `dot_general` (matmuls, einsums, attention's scores and
values), recursing into sub-jaxprs: `scan` bodies times their trip count (`length`), pjit, remat,
custom_vjp/custom_jvp calls and cond branches once each (every branch: an upper bound),
the CPU attention kernel (inn_jax.ops.cpu_attention) as the dot_generals it replaces, and
`shard_map` bodies (traced at one shard's shapes) times their number of distinct shards: the count
is of the whole logical computation, the same on any mesh. What is not: elementwise work (the
selective scan's recurrence, the Mamba's depthwise convolution, activations, norms, softmax),
reductions, and `while` loops' bodies beyond one trip; a `pallas_call` kernel's matmuls are
counted once, not once per grid step. The scan's output contraction y = C . h (2*E*S per token
and neuron) is an einsum in the sequential, associative and chunked paths, so it counts there,
and elementwise in `blocked` (the CPU default), so it does not. On the INN the uncounted parts
are real work (the scan is elementwise), so the count is a floor on the arithmetic, not its
total; XLA's cost_analysis (bench.py) is the other view.

The train count is of the train step's own jaxpr: forward, the backward pass JAX derives (a
matmul whose input needs no gradient, one on a constant, has no input transpose), the
recomputation of `model.remat`, and the micro-batch scan; so not always 3 x forward (it is for
the models here, whose first matmul reads the embedding, a parameter, without remat).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from inn_jax.ops import cpu_attention


def matmul_flops(jaxpr, mult: int = 1) -> int:
  """2*M*N*K summed over dot_generals, recursing into sub-jaxprs (scan bodies times `length`,
  shard_map bodies times their distinct shards)."""
  total = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      (lhs_contract, _), _ = eqn.params["dimension_numbers"]
      k = math.prod(eqn.invars[0].aval.shape[d] for d in lhs_contract)
      total += mult * 2 * k * math.prod(eqn.outvars[0].aval.shape)
    if eqn.primitive.name == "ffi_call":  # The CPU attention kernel: its XLA path's dots.
      kernel = cpu_attention.matmul_flops(eqn.params["target_name"],
                                          [v.aval.shape for v in eqn.invars])
      total += mult * (kernel or 0)
    inner = mult * (eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1)
    if eqn.primitive.name == "shard_map":
      inner = mult * _distinct_shards(eqn.params["mesh"], eqn.params["in_specs"])
    for p in eqn.params.values():
      for sub in p if isinstance(p, (tuple, list)) else (p,):
        sub = sub if hasattr(sub, "eqns") else getattr(sub, "jaxpr", None)  # (Closed)Jaxpr
        if hasattr(sub, "eqns"):
          total += matmul_flops(sub, inner)
  return total


def _distinct_shards(mesh, in_specs) -> int:
  """How many different pieces of work a shard_map body with these in_specs does on `mesh`."""
  # The body's shapes are one shard's. Devices along a mesh axis that splits some input each
  # work on a different part, so together they do the whole computation: the body's count times
  # the axis's size. Along an axis no input is split over, every device repeats the same work,
  # which adds nothing to the logical computation, so that axis does not multiply.
  axes = {a for spec in in_specs for entry in spec if entry is not None
          for a in (entry if isinstance(entry, tuple) else (entry,))}
  return math.prod(mesh.shape[a] for a in axes)


def fn_flops(fn, *args) -> int:
  """matmul_flops of fn(*args) (arrays or jax.ShapeDtypeStruct: nothing is computed)."""
  return matmul_flops(jax.make_jaxpr(fn)(*args).jaxpr)


def per_token(forward_fn, params, train_fn, state, batch_shape) -> dict:
  """{"forward", "train"}: matmul FLOPs per token of forward_fn(params, tokens_BL) and of
  train_fn(state, x_BL, y_BL) on int32 batches of `batch_shape` (B, L), traced only.

  Per token at this length: attention over the sequence (Transformer) grows with L.
  """
  tokens = jax.ShapeDtypeStruct(batch_shape, jnp.int32)
  n = math.prod(batch_shape)
  return {"forward": fn_flops(forward_fn, params, tokens) / n,
          "train": fn_flops(train_fn, state, tokens, tokens) / n}
