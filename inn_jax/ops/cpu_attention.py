"""Attention over the neuron axis as a compiled CPU kernel (cpu_attention.cc, built with the scan
kernel by inn_jax.ops.cpu_scan), with its own VJP.

Why a kernel: the INN's communication attends across N neurons at every (batch, time, head)
position, B L H tiny N x N problems. XLA's CPU backend runs them as batched dots of a few
elements each plus transposes into and out of the dots' (batch, time, head)-major layout, after
slicing the queries and the keys and values out of the fused in-projection's output (and, in the
backward pass, padding and summing their cotangents back into one array); here each position's
scores, softmax and weighted sum run in one pass over that output where it lies.

Contract: `attend(qkv_BNL3HK, keep_BNLHN=None)` returns what
inn_jax.nn.communication.attend returns for q = qkv[:, :, :, 0] and kv = qkv[:, :, :, 1:],
(o_BNLHK, weights_BLHNN), for float32 arrays: weights softmax(q k / sqrt(K)) over the N keys,
o the values weighted by them (times dropout's scaled mask `keep` where given). Differentiable
in qkv (through o and the weights; the mask is not differentiated); jit and grad compose with
it. Every neuron's queries on one device (the population unsplit), on the CPU backend only;
`available()` says whether the kernel is built (cpu_scan.available()).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from inn_jax.ops import cpu_scan


def available() -> bool:
  """True where the compiled kernels are built and registered (inn_jax.ops.cpu_scan)."""
  return cpu_scan.available()


def applies() -> bool:
  """available(), and not traced inside a shard_map (manual mesh axes): there a custom VJP's
  cotangents would have to carry those axes' types, so the XLA path runs."""
  mesh = jax.sharding.get_abstract_mesh()
  return available() and not getattr(mesh, "manual_axes", ())


def attend(qkv_BNL3HK, keep_BNLHN=None):
  """(o_BNLHK, weights_BLHNN); the module docstring's contract. Raises cpu_scan.Unavailable
  where the kernel is not built."""
  cpu_scan.require()
  f32 = jnp.float32
  masked = keep_BNLHN is not None
  keep = keep_BNLHN.astype(f32) if masked else jnp.zeros((1,), f32)
  scale = float(qkv_BNL3HK.shape[-1] ** -0.5)
  return _core((scale, masked), qkv_BNL3HK.astype(f32), keep)


def matmul_flops(target_name: str, in_shapes) -> int | None:
  """2*M*N*K of the dot_generals the XLA path (inn_jax.nn.communication.attend) runs for this
  kernel's call, so that matmul counts (inn_jax.train.flops) do not depend on which path ran:
  the forward's two contractions (scores, weighted values), the backward's four (each one's
  transpose to both operands). None for a target that is not this kernel's."""
  for name, count in (("attention_forward", 2), ("attention_backward", 4)):
    if target_name.startswith(cpu_scan._TARGETS[name] + "_"):
      batch, neurons, length, _, heads, dim = in_shapes[0]
      return count * 2 * batch * neurons * length * heads * neurons * dim
  return None


def _forward(cfg, qkv, keep):
  scale, masked = cfg
  batch, neurons, length, _, heads, dim = qkv.shape
  outs = (jax.ShapeDtypeStruct((batch, neurons, length, heads, dim), jnp.float32),
          jax.ShapeDtypeStruct((batch, length, heads, neurons, neurons), jnp.float32))
  return jax.ffi.ffi_call(cpu_scan.target("attention_forward"), outs, vmap_method="sequential")(
      qkv, keep, scale=np.float32(scale), masked=np.int64(masked))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _core(cfg, qkv, keep):
  return tuple(_forward(cfg, qkv, keep))


def _core_fwd(cfg, qkv, keep):
  o, w = _forward(cfg, qkv, keep)
  return (o, w), (qkv, keep, w)


def _core_bwd(cfg, res, g):
  scale, masked = cfg
  qkv, keep, w = res
  go, gw = g
  gqkv = jax.ffi.ffi_call(cpu_scan.target("attention_backward"),
                          jax.ShapeDtypeStruct(qkv.shape, jnp.float32), vmap_method="sequential")(
      qkv, keep, w, go.astype(jnp.float32), gw.astype(jnp.float32), scale=np.float32(scale),
      masked=np.int64(masked))
  return gqkv, jnp.zeros_like(keep)  # The dropout mask is not differentiated.


_core.defvjp(_core_fwd, _core_bwd)
