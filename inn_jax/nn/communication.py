"""Inter-neuron communication: the second half of each INN layer (Eq. 1's sum over j)."""

import jax
import jax.numpy as jnp
from flax import nnx

COMMUNICATIONS = ("attention", "static", "none")


class Communication(nnx.Module):
  """Messages across the neuron axis, separately at each of T = B*L (batch, time) positions.

  kind="attention": learned multi-head attention over neurons, laid out as PyTorch's
    nn.MultiheadAttention (fused in-projection with bias, out-projection with bias, dropout on the
    attention weights), so parameter counts match the paper's code.
  kind="static": the Static-Communication ablation: the same value and output projections, but
    fixed uniform routing (every neuron receives the mean message); nothing learns whom to hear.
  """

  def __init__(self, d_model: int, *, kind: str = "attention", n_heads: int = 4,
               dropout: float = 0.1, dtype=jnp.float32, rngs: nnx.Rngs):
    if kind not in ("attention", "static"):
      raise ValueError(f"communication={kind!r}: Communication takes 'attention' or 'static' "
                       "('none' means the INN has no communication sub-layer).")
    if d_model % n_heads:
      raise ValueError(f"n_heads={n_heads} must divide d_model={d_model}.")
    self.kind, self.n_heads, self.record = kind, n_heads, False
    width = 3 * d_model if kind == "attention" else d_model
    self.in_proj = nnx.Linear(d_model, width, dtype=dtype, rngs=rngs,
                              kernel_init=nnx.initializers.xavier_uniform())
    self.out_proj = nnx.Linear(d_model, d_model, dtype=dtype, rngs=rngs,
                               kernel_init=nnx.initializers.variance_scaling(
                                   1 / 3, "fan_in", "uniform"))
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x_TND):
    if self.kind == "static":
      m_TD = self.in_proj(x_TND).mean(axis=1)
      return jnp.broadcast_to(self.out_proj(m_TD)[:, None], x_TND.shape)
    tokens, neurons, width = x_TND.shape
    qkv = self.in_proj(x_TND).reshape(tokens, neurons, 3, self.n_heads, width // self.n_heads)
    q_TNHK, k_TNHK, v_TNHK = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    logits_THNN = jnp.einsum("tnhk,tmhk->thnm", q_TNHK, k_TNHK,
                             preferred_element_type=jnp.float32) * (width // self.n_heads) ** -0.5
    w_THNN = jax.nn.softmax(logits_THNN, axis=-1)
    if self.record:  # For the connectivity analysis (Figure 3); off in training.
      self.sow(nnx.Intermediate, "attention_THNN", w_THNN)
    w_THNN = self.dropout(w_THNN).astype(v_TNHK.dtype)
    o_TNHK = jnp.einsum("thnm,tmhk->tnhk", w_THNN, v_TNHK)
    return self.out_proj(o_TNHK.reshape(tokens, neurons, width))
