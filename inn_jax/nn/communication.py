"""Inter-neuron communication: the second half of each INN layer (Eq. 1's sum over j).

Each token's population talks on its own: the routing is a function of one (batch, time)
position's N neurons, (N, D) -> (N, D). It runs on the population where it lies, x_BNLD: the
attention is two batched contractions over the neuron axis with (batch, time, head) as batch
axes, logits in float32 (no vmap over tokens, whose batching moved the population around every
attention). Under a mesh whose neuron axis splits the population, each device holds the queries
of its own neurons and gathers the keys and values of all of them: one all-gather per layer (a
reduce-scatter in the backward pass), the only exchange the attention needs.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from inn_jax import sharding, typed
from inn_jax.nn import neurons
from inn_jax.ops import cpu_attention
from inn_jax.nn.dropout import dropout as dropout_layer

CommunicationKind = Literal["attention", "static", "workspace", "none"]
COMMUNICATIONS = typing.get_args(CommunicationKind)


@dataclasses.dataclass(frozen=True)
class CommunicationConfig(typed.Config):
  """How the neurons of one token talk (Eq. 1's sum over j).

  Attributes:
    kind: "attention" (learned multi-head attention across the neurons, the paper's), "static"
      (every neuron receives the mean message: Table 3's Static-Communication), "workspace"
      (the neurons write to and read from m shared slots: O(N m) per token,
      inn_jax.nn.workspace) or "none" (no communication sub-layer: Table 3's No-Communication).
    n_heads: H, attention heads (must divide the neurons' width).
    dropout: dropout on the attention weights (PyTorch's nn.MultiheadAttention).
    slots: m, the workspace's slots (kind "workspace" only).
    head_dim: K, each head's width (kinds "attention" and "workspace"). None: the neuron's width
      over n_heads (the paper's, nn.MultiheadAttention's). Given, the queries, keys and values
      are n_heads x head_dim wide whatever the neuron's width, and the output projection maps
      them back: messages whose width does not shrink with the neuron (a 1-wide neuron's
      attention otherwise scores with 1-dimensional queries and keys).
  """
  kind: CommunicationKind = "attention"
  n_heads: int = 4
  dropout: float = 0.1
  slots: int = 16
  head_dim: int | None = None

  def check(self):
    typed.positive("CommunicationConfig", n_heads=self.n_heads, slots=self.slots)
    typed.rate("CommunicationConfig", dropout=self.dropout)
    if self.head_dim is not None:
      typed.positive("CommunicationConfig", head_dim=self.head_dim)
      if self.kind == "static":
        raise ValueError(f"CommunicationConfig: head_dim={self.head_dim} has no heads to size "
                         "under kind='static' (its messages are the neurons' width); leave "
                         "head_dim None.")

  def heads(self, width: int) -> tuple[int, int]:
    """(H, K): the heads and their width for neurons `width` wide; ValueError when n_heads
    does not divide the width and no head_dim is given."""
    if self.head_dim is not None:
      return self.n_heads, self.head_dim
    if width % self.n_heads:
      raise ValueError(f"n_heads={self.n_heads} must divide the neurons' width {width} (or "
                       "give communication.head_dim).")
    return self.n_heads, width // self.n_heads


def attend(q_BnLHK, kv_BNL2HK, keep_BnLHN=None):
  """Every token's attention: the queries of n neurons (this device's; n = N unless the
  population is split over devices) over the keys and values of all N (stacked on axis 3), at
  each (batch, time) position; dropout's scaled mask `keep` applied to the weights. Returns
  (o_BnLHK, weights_BLHnN): the contractions' own (batch, time, head)-major order for the
  weights. (On one CPU device with the compiled kernels built, Communication runs
  inn_jax.ops.cpu_attention instead: the same values in one pass per position.)"""
  k_BNLHK, v_BNLHK = kv_BNL2HK[:, :, :, 0], kv_BNL2HK[:, :, :, 1]
  logits_BLHnN = jnp.einsum("bnlhk,bmlhk->blhnm", q_BnLHK, k_BNLHK,
                            preferred_element_type=jnp.float32)
  w_BLHnN = jax.nn.softmax(logits_BLHnN * q_BnLHK.shape[-1] ** -0.5, axis=-1)
  kept_BLHnN = w_BLHnN if keep_BnLHN is None else w_BLHnN * jnp.einsum("bnlhm->blhnm",
                                                                       keep_BnLHN)
  o_BnLHK = jnp.einsum("blhnm,bmlhk->bnlhk", kept_BLHnN.astype(v_BNLHK.dtype), v_BNLHK)
  return o_BnLHK, w_BLHnN


def static(v_ND):
  """One token's Static-Communication: every neuron receives the mean message."""
  return jnp.broadcast_to(v_ND.mean(0), v_ND.shape)


def over_tokens(fn):
  """fn of one token's population, mapped over batch (axis 0) and time (axis 2) of x_BNL..."""
  return jax.vmap(jax.vmap(fn, in_axes=1, out_axes=1), in_axes=0, out_axes=0)


class Communication(nnx.Module):
  """Messages across the neuron axis of x_BNLD, separately at each (batch, time) position.

  kind="attention": learned multi-head attention over neurons, laid out as PyTorch's
    nn.MultiheadAttention (fused in-projection with bias, out-projection with bias, dropout on the
    attention weights), so parameter counts match the paper's code.
  kind="static": the Static-Communication ablation: the same value and output projections, but
    fixed uniform routing (every neuron receives the mean message); nothing learns whom to hear.

  Args:
    d_model: D, the neurons' width.
    config: CommunicationConfig (kind "attention" or "static"; "none" builds no sub-layer).
    dtype: compute dtype.
    rngs: nnx.Rngs with "params" (and "dropout", or pass rngs= to the call, for training).

  Call: x_BNLD -> a_BNLD; `deterministic` and `rngs` as nnx.Dropout's.
  """

  def __init__(self, d_model: int, config: CommunicationConfig = CommunicationConfig(), *,
               dtype=jnp.float32, rngs: nnx.Rngs):
    kind, dropout = config.kind, config.dropout
    if kind not in ("attention", "static"):
      raise ValueError(f"communication={kind!r}: Communication takes 'attention' or 'static' "
                       "('none' means the INN has no communication sub-layer, 'workspace' is "
                       "inn_jax.nn.workspace.Workspace).")
    config.check()
    self.n_heads, self.head_dim = config.heads(d_model)
    self.kind, self.record = kind, False
    inner = self.n_heads * self.head_dim  # d_model unless head_dim is given.
    width = 3 * inner if kind == "attention" else d_model
    self.in_proj = nnx.Linear(d_model, width, dtype=dtype, rngs=rngs,
                              kernel_init=nnx.initializers.xavier_uniform())
    self.out_proj = nnx.Linear(inner if kind == "attention" else d_model, d_model, dtype=dtype,
                               rngs=rngs,
                               kernel_init=nnx.initializers.variance_scaling(
                                   1 / 3, "fan_in", "uniform"))
    self.dropout = dropout_layer(dropout, rngs)

  def __call__(self, x_BNLD, *, deterministic: bool | None = None, rngs=None):
    """a_BNLD. deterministic: dropout off (True) or on (False; None: the module's mode); rngs:
    a key or nnx.Rngs for this call's dropout masks instead of the module's stream."""
    if self.kind == "static":
      v_BNLD = neurons.on_rows(self.in_proj, x_BNLD)
      return neurons.on_rows(self.out_proj, over_tokens(static)(v_BNLD))
    batch, n, length, width = x_BNLD.shape
    keep_BNLHN = None
    off = self.dropout.deterministic if deterministic is None else deterministic
    if not off and self.dropout.rate > 0:
      keep_BNLHN = self.dropout(jnp.ones((batch, n, length, self.n_heads, n), jnp.float32),
                                deterministic=False, rngs=rngs)
    qkv_BNL3HK = neurons.on_rows(self.in_proj, x_BNLD).reshape(batch, n, length, 3,
                                                                self.n_heads, self.head_dim)
    if neurons.cpu_layouts() and cpu_attention.applies():
      # One CPU device: the compiled kernel reads q, k and v where the in-projection put them
      # (inn_jax.ops.cpu_attention): no slices out of qkv, no transposes around batched dots.
      o_BNLHK, w_BLHNN = cpu_attention.attend(qkv_BNL3HK, keep_BNLHN)
      o_BNLHK = o_BNLHK.astype(qkv_BNL3HK.dtype)
      w = [jnp.einsum("blhnm->bnlhm", w_BLHNN)] if self.record else []
    else:
      o_BNLHK, *w = _exchange(*_split(qkv_BNL3HK), keep_BNLHN, self.record)
    if self.record:  # For the connectivity analysis (Figure 3); off in training.
      (w_BNLHN,) = w
      w_THNN = jnp.moveaxis(w_BNLHN, 1, 3).reshape(batch * length, self.n_heads, n, n)
      self.sow(nnx.Intermediate, "attention_THNN", w_THNN)
    o_BNLE = o_BNLHK.reshape(batch, n, length, self.n_heads * self.head_dim)
    return neurons.on_rows(self.out_proj, o_BNLE)


def _split(qkv_BNL3HK):
  """q (B, N, L, H, K) and the keys and values stacked, kv (B, N, L, 2, H, K), out of the fused
  in-projection's output. (One matmul keeps its weight's gradient whole: under a mesh, one
  all-reduce of the parameter's shape, not one per column block. Keys and values stay one array
  so a split population gathers them in one all-gather.)"""
  return qkv_BNL3HK[:, :, :, 0], qkv_BNL3HK[:, :, :, 1:]


def _exchange(q_BNLHK, kv_BNL2HK, keep_BNLHN, weights: bool):
  """Every token's attention over the population: o_BNLHK, and with `weights` the attention
  weights, (o_BNLHK, weights_BNLHN), put back in the population's layout to be split as it is.
  With the neuron axis split over devices, each device gathers all neurons' keys and values and
  attends with its own neurons' queries."""
  def fn(gather, q, kv, *keep):
    o_BnLHK, w_BLHnN = attend(q, gather(kv), *keep)
    return (o_BnLHK, jnp.einsum("blhnm->bnlhm", w_BLHnN)) if weights else (o_BnLHK,)

  return sharding.population_map(fn, q_BNLHK, kv_BNL2HK,
                                 *(() if keep_BNLHN is None else (keep_BNLHN,)))
