"""The shared workspace: neuron communication whose cost does not grow with N squared.

Per token, m learned slots sit between the N neurons (a global workspace):

    write   slot s = sum_n w[s, n] v_n,   w[s, .] = softmax_n(cap(q_s . k_n / sqrt(K)))
            (the slots' learned queries q_s attend over the neurons' keys k_n = W_k h_n)
    read    neuron n receives sum_s u[n, s] V_s, u[n, .] = softmax_s(Q_n . K_s / sqrt(K))
            (the neurons' queries Q_n = W_q h_n attend over the slots' keys and values
            K_s, V_s = W_kv slot_s), then an output projection.

A token's exchange costs O(N m d) (against O(N^2 d) for attention over the neurons) plus the
per-neuron projections. Everything is per token (causal, no state) and permutation-equivariant
over the neurons (the write sums over them, the read is the same function for each).

Under neuron parallelism the write is a sum over neurons: with the logits soft-capped
(cap * tanh(x / cap), so exp cannot overflow without subtracting a maximum) each device sums
exp(logit) v and exp(logit) over its own neurons, and ONE all-reduce over the neuron axis gives
every device the slots (B, L, m, H, K + 1); the read is then local. That reduction is the
communication's only exchange on the neuron axis, whatever N (narrow neurons' LayerNorms add
their per-token mean and variance: inn_jax.nn.norm).

Top-k routing (each neuron writing to its k best slots) was left out: selecting the top k needs
every neuron's scores over all m slots first, so it would compute the dense scores it then masks
and save nothing at these sizes; the soft write is already O(N m d).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from inn_jax import sharding
from inn_jax.nn import neurons
from inn_jax.nn.dropout import dropout as dropout_layer

CAP = 30.0  # Logit soft-cap: exp(30) * 1024 neurons stays far below float32's range.


def cap(logits):
  return CAP * jnp.tanh(logits / CAP)


def write(q_mHK, k_nHK, v_nHK, keep_mHn=None):
  """One token's partial write from this device's n neurons: (numerator mHK, denominator mH),
  to be summed over all neurons (softmax_n = sum exp / sum exp). keep: dropout's scaled mask on
  the weights (numerator only, as dropout on softmax weights)."""
  e_mHn = jnp.exp(cap(jnp.einsum("mhk,nhk->mhn", q_mHK, k_nHK,
                                 preferred_element_type=jnp.float32) * q_mHK.shape[-1] ** -0.5))
  kept = e_mHn if keep_mHn is None else e_mHn * keep_mHn
  num_mHK = jnp.einsum("mhn,nhk->mhk", kept, v_nHK.astype(jnp.float32))
  return num_mHK, e_mHn.sum(-1)


def read(q_nHK, k_mHK, v_mHK, keep_nHm=None):
  """One token's read: the neurons' queries over the slots; (o_nHK, weights_nHm)."""
  logits_nHm = jnp.einsum("nhk,mhk->nhm", q_nHK, k_mHK, preferred_element_type=jnp.float32)
  w_nHm = jax.nn.softmax(logits_nHm * q_nHK.shape[-1] ** -0.5, axis=-1)
  kept = w_nHm if keep_nHm is None else w_nHm * keep_nHm
  return jnp.einsum("nhm,mhk->nhk", kept.astype(v_mHK.dtype), v_mHK), w_nHm


class Workspace(nnx.Module):
  """Messages through m shared slots, separately at each (batch, time) position: x_BNLD ->
  a_BNLD.

  Args:
    d_model: the neurons' width (D, or d_neuron for narrow neurons).
    slots: m.
    n_heads: H (divides d_model unless head_dim is given).
    head_dim: K, each head's width; None: d_model / H. Given, the slots, queries, keys and
      values are H x K wide whatever the neurons' width.
    dropout: on the write and the read weights.
    dtype: compute dtype.
    rngs: "params" (and "dropout", or rngs= in the call, for training).
  """

  def __init__(self, d_model: int, *, slots: int, n_heads: int, dropout: float, dtype,
               rngs: nnx.Rngs, head_dim: int | None = None):
    if head_dim is None and d_model % n_heads:
      raise ValueError(f"n_heads={n_heads} must divide d_model={d_model} (or give head_dim).")
    self.n_heads, self.slots, self.record = n_heads, slots, False
    self.head_dim = d_model // n_heads if head_dim is None else head_dim
    inner = n_heads * self.head_dim  # d_model unless head_dim is given.
    xavier = nnx.initializers.xavier_uniform()
    self.slot_queries = nnx.Param(nnx.initializers.normal(1.0)(rngs.params(), (slots, inner)))
    self.neuron_kv = nnx.Linear(d_model, 2 * inner, dtype=dtype, rngs=rngs, kernel_init=xavier)
    self.neuron_q = nnx.Linear(d_model, inner, dtype=dtype, rngs=rngs, kernel_init=xavier)
    self.slot_kv = nnx.Linear(inner, 2 * inner, dtype=dtype, rngs=rngs, kernel_init=xavier)
    self.out_proj = nnx.Linear(inner, d_model, dtype=dtype, rngs=rngs,
                               kernel_init=nnx.initializers.variance_scaling(1 / 3, "fan_in",
                                                                             "uniform"))
    self.dropout = dropout_layer(dropout, rngs)

  def __call__(self, x_BNLD, *, deterministic: bool | None = None, rngs=None):
    batch, n, length, _ = x_BNLD.shape
    h, k = self.n_heads, self.head_dim
    width = h * k  # The slots' and messages' width.
    kv_BNL2HK = neurons.on_rows(self.neuron_kv, x_BNLD).reshape(batch, n, length, 2, h, k)
    q_mHK = self.slot_queries[...].astype(x_BNLD.dtype).reshape(self.slots, h, k)
    off = self.dropout.deterministic if deterministic is None else deterministic
    active = not off and self.dropout.rate > 0
    keep_write = keep_read = None
    if active:
      draw = lambda shape: self.dropout(jnp.ones(shape, jnp.float32), deterministic=False,
                                        rngs=rngs)
      keep_write = draw((batch, length, self.slots, h, n))
      keep_read = draw((batch, n, length, h, self.slots))
    slots_BLmHK, den_BLmH = _write_all(q_mHK, kv_BNL2HK, keep_write)
    if self.record:  # Who writes to which slot (the analyses): each slot's weights over the
      # neurons, from the reduced denominators (neuron-sharded like the keys, no gather).
      logits_BLmHN = jnp.einsum("mhk,bnlhk->blmhn", q_mHK, kv_BNL2HK[:, :, :, 0],
                                preferred_element_type=jnp.float32) * k ** -0.5
      write_BLmHN = jnp.exp(cap(logits_BLmHN)) / den_BLmH[..., None]
      self.sow(nnx.Intermediate, "write_BLmHN", write_BLmHN)
    slot_BLmD = slots_BLmHK.reshape(batch, length, self.slots, width).astype(x_BNLD.dtype)
    skv_BLm2HK = neurons.on_rows(self.slot_kv, slot_BLmD).reshape(batch, length, self.slots, 2,
                                                                  h, k)
    q_BNLHK = neurons.on_rows(self.neuron_q, x_BNLD).reshape(batch, n, length, h, k)
    per_token = jax.vmap(jax.vmap(read, in_axes=(1, 0, 0, None if keep_read is None else 1),
                                  out_axes=1), in_axes=0, out_axes=0)
    o_BNLHK, w_BNLHm = per_token(q_BNLHK, skv_BLm2HK[..., 0, :, :], skv_BLm2HK[..., 1, :, :],
                                 keep_read)
    if self.record:  # Who reads which slot (the analyses).
      self.sow(nnx.Intermediate, "read_BNLHm", w_BNLHm)
    return neurons.on_rows(self.out_proj, o_BNLHK.reshape(batch, n, length, width))


def _write_all(q_mHK, kv_BNL2HK, keep_BLmHN):
  """The slots of every token, (B, L, m, H, K), and the write softmax's denominators
  (B, L, m, H), from the whole population: per device the partial sums of its neurons, then
  one all-reduce over the neuron axis (population_sum)."""
  # The slot queries go in as an argument (replicated), not closed over: shard_map refuses
  # captured arrays typed with an Explicit mesh's axes.
  def local(q_mHK, kv, keep=None):
    def one(kv_nL2HK, keep_LmHn):  # One batch row: over its L tokens.
      return jax.vmap(write, in_axes=(None, 1, 1, None if keep_LmHn is None else 0))(
          q_mHK, kv_nL2HK[:, :, 0], kv_nL2HK[:, :, 1], keep_LmHn)
    num_BLmHK, den_BLmH = jax.vmap(one, in_axes=(0, None if keep is None else 0))(kv, keep)
    return jnp.concatenate([num_BLmHK, den_BLmH[..., None]], axis=-1)

  if keep_BLmHN is None:
    total = sharding.population_sum(local, q_mHK, kv_BNL2HK, logical=[(), sharding.POPULATION])
  else:
    total = sharding.population_sum(
        local, q_mHK, kv_BNL2HK, keep_BLmHN,
        logical=[(), sharding.POPULATION,
                 (sharding.BATCH, None, None, None, sharding.NEURONS)])
  return total[..., :-1] / total[..., -1:], total[..., -1]
