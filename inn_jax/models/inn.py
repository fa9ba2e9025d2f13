"""Intelligent Neural Network: Algorithm 1 and Eq. 1 of the paper, all in this file.

    H = Replicate(Embed(x), N)                                   (+ a per-neuron identity)
    for each layer:  H = H + Memory(LN(H))       each neuron's Mamba, neurons folded into batch
                     H = H + Comm(LN(H))         across the N neurons, at each (batch, time)
    logits = Head(LN(Mean_N(H)))

Paper text vs paper code. Algorithm 1 writes H + Mamba(H) and H + LayerNorm(Attention(H));
the official code normalises *before* each sub-layer (two LayerNorms per layer, pre-norm).
`norm="pre"` (default) follows the code; `norm="algorithm1"` follows the text.
The code's neurons all share one Mamba and receive identical input, so they stay copies of
each other and attention over them is uniform: `neuron_identity="none"` reproduces this.
Our default, "embedding", adds a learned vector per neuron at replication; "norm" instead gives
each neuron its own LayerNorm gain and bias before its memory. A small experiment (README) chose
"embedding": "norm" neurons stay near-copies (0.4% of the variance between neurons after
training), "embedding" neurons really differ (~40%).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from inn_jax.nn import Communication, Embedder, MambaBlock
from inn_jax.sharding import DATA, NEURON, constrain

NEURON_IDENTITIES = ("embedding", "norm", "none")
NORMS = ("pre", "algorithm1")


def fold(h_BNLD):
  """Neurons into the batch, for the memory: (B*N, L, D)."""
  b, n, length, d = h_BNLD.shape
  return constrain(h_BNLD.reshape(b * n, length, d), (DATA, NEURON), None, None)


def unfold(h_MLD, n_neurons):
  """Back to (B, N, L, D)."""
  m, length, d = h_MLD.shape
  return constrain(h_MLD.reshape(m // n_neurons, n_neurons, length, d), DATA, NEURON, None, None)


def to_tokens(h_MLD, n_neurons):
  """Neurons last-but-one, for the communication: (B*L, N, D)."""
  h_BLND = jnp.swapaxes(unfold(h_MLD, n_neurons), 1, 2)
  b, length, n, d = h_BLND.shape
  return constrain(h_BLND.reshape(b * length, n, d), DATA, NEURON, None)


def from_tokens(a_TND, batch):
  t, n, d = a_TND.shape
  return fold(jnp.swapaxes(a_TND.reshape(batch, t // batch, n, d), 1, 2))


class NeuronNorm(nnx.Module):
  """LayerNorm on folded neurons whose gain and bias are per neuron (n=N) or shared (n=1).

  Per-neuron gains start at 1 + N(0, 0.2^2): equal gains would give every neuron the same
  gradient, and the copies would never separate.
  """

  def __init__(self, d_model: int, n: int = 1, *, rngs: nnx.Rngs | None = None):
    self.n = n
    noise = 0.2 * jax.random.normal(rngs.params(), (n, d_model)) if n > 1 else 0.0
    self.scale_ND = nnx.Param(jnp.ones((n, d_model)) + noise)
    self.bias_ND = nnx.Param(jnp.zeros((n, d_model)))

  def __call__(self, h_MLD):
    x = h_MLD.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    x = (x - mean) * jax.lax.rsqrt(jnp.square(x - mean).mean(-1, keepdims=True) + 1e-5)
    x_MnLD = x.reshape(-1, self.n, *x.shape[1:])
    x_MnLD = x_MnLD * self.scale_ND[...][:, None] + self.bias_ND[...][:, None]
    return x_MnLD.reshape(h_MLD.shape).astype(h_MLD.dtype)


class NeuronLayer(nnx.Module):
  """One INN layer: each neuron updates its memory, then the neurons exchange messages."""

  def __init__(self, d_model: int, n_neurons: int, *, communication: str, n_heads: int,
               attn_dropout: float, norm: str, per_neuron_norm: bool, mamba_kw: dict, dtype,
               rngs: nnx.Rngs):
    self.n_neurons, self.norm = n_neurons, norm
    self.memory_norm = (NeuronNorm(d_model, n_neurons if per_neuron_norm else 1, rngs=rngs)
                        if norm == "pre" else None)
    self.memory = MambaBlock(d_model, **mamba_kw, dtype=dtype, rngs=rngs)
    has_comm = communication != "none"
    self.comm_norm = NeuronNorm(d_model) if has_comm else None
    self.comm = (Communication(d_model, kind=communication, n_heads=n_heads,
                               dropout=attn_dropout, dtype=dtype, rngs=rngs)
                 if has_comm else None)

  def __call__(self, h_MLD, batch: int, cache=None):
    pre = self.norm == "pre"
    m_MLD, cache = self.memory(self.memory_norm(h_MLD) if pre else h_MLD, cache=cache,
                               return_cache=True)
    h_MLD = h_MLD + m_MLD
    if self.comm is None:
      return h_MLD, cache
    a_TND = self.comm(to_tokens(self.comm_norm(h_MLD) if pre else h_MLD, self.n_neurons))
    a_MLD = from_tokens(a_TND, batch)
    return h_MLD + (a_MLD if pre else self.comm_norm(a_MLD)), cache


class INN(nnx.Module):
  """A population of N Mamba neurons that talk through attention: tokens_BL -> logits_BLV."""

  def __init__(self, vocab_size: int, *, d_model: int = 256, n_layers: int = 6,
               n_neurons: int = 32, n_heads: int = 4, d_state: int = 16, d_conv: int = 4,
               expand: int = 2, dt_rank: int | str = "auto", neuron_identity: str = "embedding",
               communication: str = "attention", norm: str = "pre", attn_dropout: float = 0.1,
               tie_embeddings: bool = False, embed_init: str = "scaled",
               scan_method: str = "auto", scan_chunk: int = 64, remat: bool = False,
               dtype=jnp.float32, rngs: nnx.Rngs):
    for name, value, options in (("neuron_identity", neuron_identity, NEURON_IDENTITIES),
                                 ("norm", norm, NORMS)):
      if value not in options:
        raise ValueError(f"INN: {name}={value!r} is not one of {options}.")
    if norm == "algorithm1" and neuron_identity == "norm":
      raise ValueError("INN: neuron_identity='norm' needs norm='pre' (Algorithm 1 has no "
                       "LayerNorm before the memory to make per-neuron).")
    self.n_neurons, self.identity = n_neurons, neuron_identity
    self.embed = Embedder(vocab_size, d_model, init=embed_init, tie=tie_embeddings, dtype=dtype,
                          rngs=rngs)
    self.neuron_embed_ND = (nnx.Param(jax.random.normal(rngs.params(), (n_neurons, d_model)))
                            if neuron_identity == "embedding" else None)
    mamba_kw = dict(d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank,
                    scan_method=scan_method, scan_chunk=scan_chunk)
    self.layers = nnx.List([
        NeuronLayer(d_model, n_neurons, communication=communication, n_heads=n_heads,
                    attn_dropout=attn_dropout, norm=norm,
                    per_neuron_norm=neuron_identity == "norm", mamba_kw=mamba_kw, dtype=dtype,
                    rngs=rngs) for _ in range(n_layers)])
    self.final_norm = NeuronNorm(d_model)
    self.record, self.remat = False, remat

  def init_cache(self, batch_size: int):
    return [layer.memory.init_cache(batch_size * self.n_neurons) for layer in self.layers]

  def capture(self, on: bool = True):
    """Sow neuron states and attention weights as nnx.Intermediate on the next calls."""
    self.record = on
    for layer in self.layers:
      if layer.comm is not None:
        layer.comm.record = on

  def __call__(self, tokens_BL, *, cache=None, return_cache: bool = False):
    batch, length = tokens_BL.shape
    x_BLD = self.embed.encode(tokens_BL)
    h_BNLD = jnp.broadcast_to(x_BLD[:, None], (batch, self.n_neurons, *x_BLD.shape[1:]))
    if self.neuron_embed_ND is not None:
      h_BNLD = h_BNLD + self.neuron_embed_ND[...][:, None].astype(h_BNLD.dtype)
    h_MLD = fold(h_BNLD)
    cache = cache if cache is not None else [None] * len(self.layers)
    new_cache = []
    for layer, layer_cache in zip(self.layers, cache):
      if self.remat and layer_cache is None and not self.record:
        h_MLD, layer_cache = _rematerialised(layer, h_MLD, batch)
      else:
        h_MLD, layer_cache = layer(h_MLD, batch, layer_cache)
      new_cache.append(layer_cache)
      if self.record:  # Neuron states per layer, for the activation analyses (A.2, Figure 4).
        self.sow(nnx.Intermediate, "neurons_BNLD", unfold(h_MLD, self.n_neurons))
    y_BLD = unfold(h_MLD, self.n_neurons).mean(axis=1)
    logits_BLV = self.embed.decode(self.final_norm(y_BLD))
    return (logits_BLV, new_cache) if return_cache else logits_BLV


def _rematerialised(layer: NeuronLayer, h_MLD, batch: int):
  """The layer with only its input kept for the backward pass: N-fold activations are the INN's
  memory bottleneck. Paper size, 8 x 256 on CPU: 7.1 GiB of XLA temporaries with remat, about 22
  without; train.microbatches cuts memory further and costs no recomputation."""
  graphdef, rng_state, rest = nnx.split(layer, nnx.RngState, ...)

  @jax.checkpoint
  def run(rng_state, rest, h_MLD):
    layer = nnx.merge(graphdef, rng_state, rest)  # Fresh Variables in this trace.
    return layer(h_MLD, batch), nnx.state(layer, nnx.RngState)

  out, rng_state = run(rng_state, rest, h_MLD)
  # Only live dropout draws: write its counter back so the next layer draws a new mask.
  if any(not m.deterministic for _, m in nnx.iter_graph(layer) if isinstance(m, nnx.Dropout)):
    nnx.update(layer, rng_state)
  return out
