"""Intelligent Neural Network: Algorithm 1 and Eq. 1 of the paper, all in this file.

    H = Replicate(Embed(x), N)                                   (+ a per-neuron identity)
    for each layer:  H = H + Memory(LN(H))       each neuron's Mamba, on its own stream
                     H = H + Comm(LN(H))         across the N neurons, at each (batch, time)
    logits = Head(LN(Mean_N(H)))

The population is an array axis from end to end: every activation is h_BNLD, split over the mesh
as (data, neuron) (inn_jax.sharding), so under neuron parallelism each device runs the memory of
its own neurons and the only exchange is the communication's keys and values.

Paper text vs paper code. Algorithm 1 writes H + Mamba(H) and H + LayerNorm(Attention(H));
the official code normalises *before* each sub-layer (two LayerNorms per layer, pre-norm).
`norm="pre"` (default) follows the code; `norm="algorithm1"` follows the text.
The code's neurons all share one Mamba and receive identical input, so they stay copies of
each other and attention over them is uniform: `neuron_identity="none"` with
`neuron_params="shared"` reproduces this. Eq. 1 gives each neuron its own memory, Memory_i:
`neuron_params="ssm"` gives each its own A, D and dt bias (its time-scales), `"full"` its own
Mamba weights. `neuron_identity="embedding"` adds a learned vector per neuron at replication;
`"norm"` gives each neuron its own LayerNorm gain and bias before its memory.

The default form, `neuron_identity="none"` with `neuron_params="full"`, was chosen by training
every identity x params pair at equal parameters and tokens (benchmarks/neuron_forms.sh; table in
benchmarks/results/neuron_forms/table.md): the neurons differ because each has its own memory,
as Eq. 1 says. `expand=None` keeps the memory's parameters those of one shared Mamba of expand 2:
with `"full"` each neuron's memory is N times narrower (2 * d_model / N wide).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from inn_jax import sharding
from inn_jax.models import call_args
from inn_jax.nn import NEURON_PARAMS, Communication, Embedder, LayerNorm, MambaBlock, neurons

NEURON_IDENTITIES = ("embedding", "norm", "none")
NORMS = ("pre", "algorithm1")
# What the backward pass keeps (the rest is recomputed): "none" keeps everything; "layer" each
# layer's input; "rows" each sub-layer's input, recomputing it remat_rows batch rows (per device)
# at a time, so that one slice's intermediates are alive at once.
REMATS = ("none", "layer", "rows")


class NeuronLayer(nnx.Module):
  """One INN layer on h_BNLD: each neuron updates its memory, then the neurons exchange messages."""

  def __init__(self, d_model: int, n_neurons: int, *, communication: str, n_heads: int,
               attn_dropout: float, norm: str, per_neuron_norm: bool, mamba_kw: dict, dtype,
               rngs: nnx.Rngs):
    self.norm = norm
    self.memory_norm = (LayerNorm(d_model, n_neurons=n_neurons if per_neuron_norm else None,
                                  rngs=rngs) if norm == "pre" else None)
    self.memory = MambaBlock(d_model, **mamba_kw, n_neurons=n_neurons, dtype=dtype, rngs=rngs)
    has_comm = communication != "none"
    self.comm_norm = LayerNorm(d_model) if has_comm else None
    self.comm = (Communication(d_model, kind=communication, n_heads=n_heads,
                               dropout=attn_dropout, dtype=dtype, rngs=rngs)
                 if has_comm else None)

  def remember(self, h_BNLD, cache=None):
    """The memory sub-layer: (h + Memory(LN(h)), the memory's recurrent cache)."""
    with jax.named_scope("memory"):
      m_BNLD, cache = self.memory(self.memory_norm(h_BNLD) if self.norm == "pre" else h_BNLD,
                                  cache=cache, return_cache=True)
      return sharding.population(h_BNLD + m_BNLD), cache

  def communicate(self, h_BNLD, dropout_key=None):
    """The communication sub-layer: h + Comm(LN(h)) (Algorithm 1: h + LN(Comm(h)))."""
    if self.comm is None:
      return h_BNLD
    with jax.named_scope("communication"):
      if self.norm == "pre":
        a_BNLD = self.comm(self.comm_norm(h_BNLD), dropout_key=dropout_key)
      else:
        a_BNLD = self.comm_norm(self.comm(h_BNLD, dropout_key=dropout_key))
      return sharding.population(h_BNLD + a_BNLD)

  def __call__(self, h_BNLD, cache=None, *, remat: str = "none", remat_rows: int = 1):
    if remat == "none" or cache is not None:
      h_BNLD, cache = self.remember(h_BNLD, cache)
      return self.communicate(h_BNLD), cache
    if remat == "layer":
      return _rematerialised(self, lambda m, h, key: m.communicate(m.remember(h)[0], key),
                             h_BNLD, remat_rows=0), None
    h_BNLD = _rematerialised(self, lambda m, h, key: m.remember(h)[0], h_BNLD, remat_rows)
    return _rematerialised(self, lambda m, h, key: m.communicate(h, key), h_BNLD,
                           remat_rows), None


class INN(nnx.Module):
  """A population of N Mamba neurons that talk through attention: tokens_BL -> logits_BLV."""

  def __init__(self, vocab_size: int, *, d_model: int = 256, n_layers: int = 6,
               n_neurons: int = 32, n_heads: int = 4, d_state: int = 16, d_conv: int = 4,
               expand: float | None = None, dt_rank: int | str = "auto",
               neuron_identity: str = "none", neuron_params: str = "full",
               communication: str = "attention", norm: str = "pre", attn_dropout: float = 0.1,
               tie_embeddings: bool = False, embed_init: str = "scaled",
               scan_method: str = "auto", scan_chunk: int = 64, remat: str = "none",
               remat_rows: int = 1, dtype=jnp.float32, rngs: nnx.Rngs):
    for name, value, options in (("neuron_identity", neuron_identity, NEURON_IDENTITIES),
                                 ("neuron_params", neuron_params, tuple(NEURON_PARAMS)),
                                 ("norm", norm, NORMS), ("remat", remat, REMATS)):
      if value not in options:
        raise ValueError(f"INN: {name}={value!r} is not one of {options}.")
    if norm == "algorithm1" and neuron_identity == "norm":
      raise ValueError("INN: neuron_identity='norm' needs norm='pre' (Algorithm 1 has no "
                       "LayerNorm before the memory to make per-neuron).")
    if expand is None:
      expand = max(1, round(2 * d_model / n_neurons)) / d_model if neuron_params == "full" else 2.0
    self.n_neurons = n_neurons
    self.embed = Embedder(vocab_size, d_model, init=embed_init, tie=tie_embeddings, dtype=dtype,
                          rngs=rngs)
    self.neuron_embed_ND = (neurons.param(jax.random.normal, rngs.params(), (d_model,), n_neurons)
                            if neuron_identity == "embedding" else None)
    mamba_kw = dict(d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank,
                    scan_method=scan_method, scan_chunk=scan_chunk, neuron_params=neuron_params)
    self.layers = nnx.List([
        NeuronLayer(d_model, n_neurons, communication=communication, n_heads=n_heads,
                    attn_dropout=attn_dropout, norm=norm,
                    per_neuron_norm=neuron_identity == "norm", mamba_kw=mamba_kw, dtype=dtype,
                    rngs=rngs) for _ in range(n_layers)])
    self.final_norm = LayerNorm(d_model)
    self.record, self.remat, self.remat_rows = False, remat, remat_rows

  def init_cache(self, batch_size: int):
    return [layer.memory.init_cache((batch_size, self.n_neurons)) for layer in self.layers]

  def capture(self, on: bool = True):
    """Sow neuron states and attention weights as nnx.Intermediate on the next calls."""
    self.record = on
    for layer in self.layers:
      if layer.comm is not None:
        layer.comm.record = on

  def __call__(self, tokens_BL, *, cache=None, return_cache: bool = False):
    """logits_BLV, or (logits_BLV, cache) with return_cache; `cache` (init_cache(batch), or
    one a call returned) continues an earlier call. Arguments: inn_jax.models.call_args."""
    call_args.check_tokens("INN", tokens_BL)
    if cache is not None:
      call_args.check_cache("INN", cache, lambda: self.init_cache(tokens_BL.shape[0]),
                            tokens_BL.shape[0])
    # Named scopes in the paper's words (embed, layer_k/memory, layer_k/communication, head),
    # so that a profiler trace reads like Algorithm 1.
    with jax.named_scope("embed"):
      x_BLD = self.embed.encode(tokens_BL)
      h_BNLD = jnp.broadcast_to(x_BLD[:, None],
                                (x_BLD.shape[0], self.n_neurons, *x_BLD.shape[1:]))
      if self.neuron_embed_ND is not None:
        h_BNLD = h_BNLD + neurons.per_step(self.neuron_embed_ND).astype(h_BNLD.dtype)
      h_BNLD = sharding.population(h_BNLD)
    cache = cache if cache is not None else [None] * len(self.layers)
    new_cache = []
    remat = "none" if self.record else self.remat
    for k, (layer, layer_cache) in enumerate(zip(self.layers, cache)):
      with jax.named_scope(f"layer_{k}"):
        h_BNLD, layer_cache = layer(h_BNLD, layer_cache, remat=remat,
                                    remat_rows=self.remat_rows)
      new_cache.append(layer_cache)
      if self.record:  # Neuron states per layer, for the activation analyses (A.2, Figure 4).
        self.sow(nnx.Intermediate, "neurons_BNLD", h_BNLD)
    with jax.named_scope("head"):
      y_BLD = h_BNLD.mean(axis=1)
      logits_BLV = self.embed.decode(self.final_norm(y_BLD))
    return (logits_BLV, new_cache) if return_cache else logits_BLV


def _rematerialised(layer: NeuronLayer, fn, h_BNLD, remat_rows: int):
  """fn(layer, h, dropout_key) with only h kept for the backward pass (N-fold activations are
  the INN's memory bottleneck). remat_rows > 0 computes it over slices of the batch, remat_rows
  rows per device each (rows j, j + k, ... as memory.split_rows: no data moves between
  devices), one slice at a time, each with its own dropout masks."""
  graphdef, state = nnx.split(layer)
  # One draw from the layer's stream, outside the recomputed function: the recomputation sees
  # the same key, so the same masks.
  key = (layer.comm.dropout.rngs() if layer.comm is not None and layer.comm.dropout.rngs
         is not None and not layer.comm.dropout.deterministic else None)

  @jax.checkpoint
  def run(state, h_BNLD, key):
    return fn(nnx.merge(graphdef, state), h_BNLD, key)

  batch = h_BNLD.shape[0]
  axes = sharding.population_axes(h_BNLD.shape[:2])
  local = batch // (jax.sharding.get_abstract_mesh().shape[axes[0]] if axes and axes[0] else 1)
  slices = local // remat_rows if remat_rows and local % remat_rows == 0 else 1
  if slices <= 1:
    return run(state, h_BNLD, key)
  split = lambda x: jnp.swapaxes(x.reshape(batch // slices, slices, *x.shape[1:]), 0, 1)
  keys = (jax.random.split(key, slices) if key is not None
          else jnp.zeros((slices,), jnp.uint32))
  out_QbNLD = jax.lax.map(lambda a: run(state, a[0], a[1] if key is not None else None),
                          (split(h_BNLD), keys))
  return sharding.population(jnp.swapaxes(out_QbNLD, 0, 1).reshape(h_BNLD.shape))
