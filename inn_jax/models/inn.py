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

import dataclasses
import functools
import typing
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
from flax import nnx

from inn_jax import sharding, typed
from inn_jax.models import call_args
from inn_jax.nn import (Communication, CommunicationConfig, Embedder, LayerNorm, MambaBlock,
                        MambaConfig, neurons)
from inn_jax.nn.embed import EmbedInit
from inn_jax.nn.workspace import Workspace

NeuronIdentity = Literal["embedding", "norm", "none"]
Norm = Literal["pre", "algorithm1"]
# What the backward pass keeps (the rest is recomputed): "none" keeps everything; "layer" each
# layer's input; "rows" each sub-layer's input, recomputing it remat_rows batch rows (per device)
# at a time, so that one slice's intermediates are alive at once.
Remat = Literal["none", "layer", "rows"]
NEURON_IDENTITIES, NORMS, REMATS = (typing.get_args(t) for t in (NeuronIdentity, Norm, Remat))


@dataclasses.dataclass(frozen=True)
class INNConfig(typed.Config):
  """An INN (Algorithm 1, Eq. 1). Presets: `INNConfig.paper_code()` (the paper's code, exactly:
  4,219,163 parameters with vocabulary 27) and the Table 3 rows `no_comm()`, `static_comm()`.

  Attributes:
    d_model: D, the width of every neuron's stream.
    n_layers: layers of (memory, communication).
    n_neurons: N, the population.
    memory: each neuron's memory (MambaConfig); its fields left None are the INN's defaults:
      neuron_params "full" (each neuron its own memory), expand parameter-matched (one shared
      Mamba's parameters: with "full" each neuron 2 D / N wide).
    communication: how the neurons talk (CommunicationConfig); kind "none" has no sub-layer.
    neuron_width: d_neuron, the width of each neuron's stream; None is d_model (no projections:
      today's models, exactly). Narrower: each neuron its own projection in from the shared
      embedding (D -> d_neuron) and out at the readout (d_neuron -> D, then the mean over
      neurons), its memory sized from d_neuron (expand=None: 2), and the layer's LayerNorms
      take their statistics over the whole population's W = N x d_neuron features (a neuron
      normalised alone over a few features would lose them: LayerNorm(population=True)). The
      natural scaling family keeps W fixed.
    neuron_identity: "none"; "embedding" (a learned vector per neuron added at replication) or
      "norm" (each neuron its own LayerNorm gain and bias before its memory).
    norm: "pre" (the paper's code: LN before each sub-layer) or "algorithm1" (the text).
    tie_embeddings: the head is the embedding's transpose.
    embed_init: "scaled" (N(0, 1/D) x sqrt(D), near-uniform first logits) or "normal" (the
      paper's code: N(0, 1)).
    remat: what the backward pass keeps (REMATS); remat_rows: rows per slice for "rows".
    dtype: compute dtype (the scan state stays float32).
    param_dtype: the parameters' storage dtype (float32; bfloat16 halves the parameters' and the
      optimiser moments' memory); compute stays `dtype`.
  """
  d_model: int = 256
  n_layers: int = 6
  n_neurons: int = 32
  neuron_width: int | None = None
  memory: MambaConfig = MambaConfig()
  communication: CommunicationConfig = CommunicationConfig()
  neuron_identity: NeuronIdentity = "none"
  norm: Norm = "pre"
  tie_embeddings: bool = False
  embed_init: EmbedInit = "scaled"
  remat: Remat = "none"
  remat_rows: int = 1
  dtype: typed.DType = "float32"
  param_dtype: typed.DType = "float32"

  # The command line's flat keys (config.model.<key>) of the nested fields.
  FLAT: ClassVar[dict] = {
      "d_state": ("memory", "d_state"), "d_conv": ("memory", "d_conv"),
      "expand": ("memory", "expand"), "dt_rank": ("memory", "dt_rank"),
      "scan_method": ("memory", "scan_method"), "scan_chunk": ("memory", "scan_chunk"),
      "neuron_params": ("memory", "neuron_params"), "communication": ("communication", "kind"),
      "n_heads": ("communication", "n_heads"), "attn_dropout": ("communication", "dropout"),
      "workspace_slots": ("communication", "slots"), "head_dim": ("communication", "head_dim")}

  def __post_init__(self):
    # The memory's fields left None take the INN's form, not the paper code's shared Mamba.
    if isinstance(self.memory, MambaConfig) and self.memory.neuron_params is None:
      object.__setattr__(self, "memory", self.memory.replace(neuron_params="full"))
    super().__post_init__()

  def check(self):
    typed.positive("INNConfig", d_model=self.d_model, n_layers=self.n_layers,
                   n_neurons=self.n_neurons, remat_rows=self.remat_rows)
    if self.neuron_width is not None:
      typed.positive("INNConfig", neuron_width=self.neuron_width)
    if (self.communication.kind != "none" and self.communication.head_dim is None
        and self.width % self.communication.n_heads):
      width = ("d_model" if self.neuron_width is None else "neuron_width") + f"={self.width}"
      raise ValueError(f"INNConfig: communication.n_heads={self.communication.n_heads} must "
                       f"divide {width}.")
    if self.norm == "algorithm1" and self.neuron_identity == "norm":
      raise ValueError("INNConfig: neuron_identity='norm' needs norm='pre' (Algorithm 1 has no "
                       "LayerNorm before the memory to make per-neuron).")

  @classmethod
  def paper_code(cls, **changes) -> INNConfig:
    """The official code's INN: one shared Mamba per layer (expand 2), identical neurons, a
    head tied to an N(0, 1) embedding; N=32, 6 layers, width 256, d_state 16."""
    base = cls(memory=MambaConfig(expand=2.0, neuron_params="shared"), tie_embeddings=True,
               embed_init="normal")
    return dataclasses.replace(base, **changes)

  @classmethod
  def no_comm(cls, **changes) -> INNConfig:
    """Table 3's No-Communication: the memory only."""
    return cls(**changes).replace(communication=CommunicationConfig(kind="none"))

  @classmethod
  def static_comm(cls, **changes) -> INNConfig:
    """Table 3's Static-Communication: every neuron receives the mean message."""
    return cls(**changes).replace(communication=CommunicationConfig(kind="static"))

  @property
  def width(self) -> int:
    """Each neuron's width: neuron_width, else d_model."""
    return self.d_model if self.neuron_width is None else self.neuron_width

  @property
  def memory_expand(self) -> float:
    """The memory's expand: config.memory.expand, or (None) the parameter-matched width of
    full-width neurons, 2 for narrow ones (each its own Mamba on its d_neuron)."""
    if self.memory.expand is not None:
      return self.memory.expand
    if self.memory.neuron_params == "full" and self.neuron_width is None:
      return max(1, round(2 * self.d_model / self.n_neurons)) / self.d_model
    return 2.0


class NeuronLayer(nnx.Module):
  """One INN layer on h_BNLD: each neuron updates its memory, then the neurons exchange messages."""

  def __init__(self, config: INNConfig, *, rngs: nnx.Rngs):
    d_model, n_neurons, dtype = config.width, config.n_neurons, jnp.dtype(config.dtype)
    self.norm = config.norm
    per_neuron_norm = config.neuron_identity == "norm"
    narrow = config.neuron_width is not None  # Normalised over the population (LayerNorm).
    self.memory_norm = (LayerNorm(d_model, n_neurons=n_neurons if per_neuron_norm else None,
                                  population=narrow, rngs=rngs) if self.norm == "pre" else None)
    self.memory = MambaBlock(d_model, config.memory.replace(expand=config.memory_expand),
                             n_neurons=n_neurons, dtype=dtype, rngs=rngs)
    comm = config.communication
    self.comm_norm = LayerNorm(d_model, population=narrow) if comm.kind != "none" else None
    if comm.kind == "workspace":
      self.comm = Workspace(d_model, slots=comm.slots, n_heads=comm.n_heads,
                            head_dim=comm.head_dim, dropout=comm.dropout, dtype=dtype, rngs=rngs)
    elif comm.kind != "none":
      self.comm = Communication(d_model, comm, dtype=dtype, rngs=rngs)
    else:
      self.comm = None

  def remember(self, h_BNLD, cache=None):
    """The memory sub-layer: (h + Memory(LN(h)), the memory's recurrent cache)."""
    with jax.named_scope("memory"):
      m_BNLD, cache = self.memory(self.memory_norm(h_BNLD) if self.norm == "pre" else h_BNLD,
                                  cache=cache, return_cache=True)
      return sharding.population(h_BNLD + m_BNLD), cache

  def communicate(self, h_BNLD, deterministic=None, rngs=None):
    """The communication sub-layer: h + Comm(LN(h)) (Algorithm 1: h + LN(Comm(h)));
    `deterministic` and `rngs` (a key, or nnx.Rngs) go to its dropout."""
    if self.comm is None:
      return h_BNLD
    with jax.named_scope("communication"):
      kw = dict(deterministic=deterministic, rngs=rngs)
      if self.norm == "pre":
        a_BNLD = self.comm(self.comm_norm(h_BNLD), **kw)
      else:
        a_BNLD = self.comm_norm(self.comm(h_BNLD, **kw))
      return sharding.population(h_BNLD + a_BNLD)

  def __call__(self, h_BNLD, cache=None, *, remat: str = "none", remat_rows: int = 1,
               deterministic=None, rngs=None):
    if remat == "none" or cache is not None:
      h_BNLD, cache = self.remember(h_BNLD, cache)
      return self.communicate(h_BNLD, deterministic, rngs), cache
    run = functools.partial(_rematerialised, self, deterministic=deterministic, rngs=rngs)
    if remat == "layer":
      return run(lambda m, h, key: m.communicate(m.remember(h)[0], deterministic, key), h_BNLD,
                 remat_rows=0), None
    h_BNLD = run(lambda m, h, key: m.remember(h)[0], h_BNLD, remat_rows)
    return run(lambda m, h, key: m.communicate(h, deterministic, key), h_BNLD, remat_rows), None


class INN(nnx.Module):
  """A population of N Mamba neurons that talk through attention: tokens_BL -> logits_BLV.

  Args:
    config: INNConfig.
    vocab_size: V.
    rngs: nnx.Rngs with a "params" stream, and a "dropout" stream unless every call that
      trains passes its own `rngs` (or the dropout rate is 0).

  Call: see __call__. `init_cache(batch, max_len=None)` gives an empty recurrent state.
  """

  is_recurrent: ClassVar[bool] = True  # A state carried from window to window (evaluation).

  def __init__(self, config: INNConfig, vocab_size: int, *, rngs: nnx.Rngs):
    if not isinstance(config, INNConfig):
      raise TypeError(f"INN(config, vocab_size, *, rngs): config must be an INNConfig, got "
                      f"{type(config).__name__}.")
    self.config, self.n_neurons = config, config.n_neurons
    d_model, dtype = config.d_model, jnp.dtype(config.dtype)
    self.embed = Embedder(vocab_size, d_model, init=config.embed_init,
                          tie=config.tie_embeddings, dtype=dtype, rngs=rngs)
    width = config.width
    self.neuron_embed_ND = (neurons.param(jax.random.normal, rngs.params(), (width,),
                                          config.n_neurons)
                            if config.neuron_identity == "embedding" else None)
    # Narrow neurons: each its own projection in and out (PyTorch's Linear init).
    uniform = lambda fan_in: lambda key, shape: jax.random.uniform(
        key, shape, minval=-fan_in ** -0.5, maxval=fan_in ** -0.5)
    narrow = config.neuron_width is not None
    self.neuron_in_DE = (neurons.param(uniform(d_model), rngs.params(), (d_model, width),
                                       config.n_neurons) if narrow else None)
    self.layers = nnx.List([NeuronLayer(config, rngs=rngs) for _ in range(config.n_layers)])
    self.neuron_out_ED = (neurons.param(uniform(width), rngs.params(), (width, d_model),
                                        config.n_neurons) if narrow else None)
    self.final_norm = LayerNorm(d_model)
    self.record, self.remat, self.remat_rows = False, config.remat, config.remat_rows
    neurons.store_params(self, config.param_dtype)

  def init_cache(self, batch_size: int, max_len: int | None = None):
    """An empty state for `batch_size` rows (max_len: any length; unused by a recurrent state)."""
    return [layer.memory.init_cache((batch_size, self.n_neurons)) for layer in self.layers]

  def capture(self, on: bool = True):
    """Sow neuron states and attention weights as nnx.Intermediate on the next calls."""
    self.record = on
    for layer in self.layers:
      if layer.comm is not None:
        layer.comm.record = on

  def __call__(self, tokens_BL, *, cache=None, deterministic: bool | None = None, rngs=None,
               return_cache: bool = False):
    """logits_BLV, or (logits_BLV, cache) with return_cache.

    Args:
      tokens_BL: (batch, length) integer ids.
      cache: init_cache(batch), or one a call returned: continues an earlier call.
      deterministic: True turns dropout off, False on; None follows model.train() / eval().
      rngs: dropout randomness for this call, a jax key or nnx.Rngs (one "dropout" draw per
        site); None uses the model's own stream. Passing keys keeps the call pure, so jax.grad
        over nnx.split state works in training mode.
      return_cache: also return the state after the last token.
    """
    call_args.check_tokens("INN", tokens_BL, self.embed.vocab_size)
    if cache is not None:
      call_args.check_cache("INN", cache, lambda: self.init_cache(tokens_BL.shape[0]),
                            tokens_BL.shape[0])
    rngs = call_args.dropout_rngs("INN", rngs, self._dropouts(), deterministic)
    # Named scopes in the paper's words (embed, layer_k/memory, layer_k/communication, head),
    # so that a profiler trace reads like Algorithm 1.
    with jax.named_scope("embed"):
      x_BLD = self.embed.encode(tokens_BL)
      if self.neuron_in_DE is None:
        h_BNLD = sharding.replicate(x_BLD, self.n_neurons)
      else:  # Each neuron's own view of the embedding: (B, N, L, d_neuron).
        w_NDE = neurons.value(self.neuron_in_DE).astype(x_BLD.dtype)
        h_BNLD = jnp.einsum("bld,nde->bnle", x_BLD, w_NDE)
      if self.neuron_embed_ND is not None:
        h_BNLD = h_BNLD + neurons.per_step(self.neuron_embed_ND).astype(h_BNLD.dtype)
      h_BNLD = sharding.population(h_BNLD)
    cache = cache if cache is not None else [None] * len(self.layers)
    new_cache = []
    remat = "none" if self.record else self.remat
    for k, (layer, layer_cache) in enumerate(zip(self.layers, cache)):
      with jax.named_scope(f"layer_{k}"):
        h_BNLD, layer_cache = layer(h_BNLD, layer_cache, remat=remat,
                                    remat_rows=self.remat_rows, deterministic=deterministic,
                                    rngs=rngs)
      new_cache.append(layer_cache)
      if self.record:  # Neuron states per layer, for the activation analyses (A.2, Figure 4).
        self.sow(nnx.Intermediate, "neurons_BNLD", h_BNLD)
    with jax.named_scope("head"):
      if self.neuron_out_ED is None:
        y_BLD = sharding.population_mean(h_BNLD)
      else:  # The mean over neurons of each neuron's own projection back to D.
        w_NED = neurons.value(self.neuron_out_ED).astype(h_BNLD.dtype)
        y_BLD = sharding.population_sum(
            lambda h, w: jnp.einsum("bnle,ned->bld", h, w), h_BNLD, w_NED,
            logical=[sharding.POPULATION, (sharding.NEURONS,)]) / self.n_neurons
      logits_BLV = self.embed.decode(self.final_norm(y_BLD))
    return (logits_BLV, new_cache) if return_cache else logits_BLV

  def _dropouts(self):
    return [layer.comm.dropout for layer in self.layers if layer.comm is not None]


def _rematerialised(layer: NeuronLayer, fn, h_BNLD, remat_rows: int, *, deterministic=None,
                    rngs=None):
  """fn(layer, h, key) with only h kept for the backward pass (N-fold activations are
  the INN's memory bottleneck). remat_rows > 0 computes it over slices of the batch, remat_rows
  rows per device each (rows j, j + k, ... as memory.split_rows: no data moves between
  devices), one slice at a time, each with its own dropout masks."""
  graphdef, state = nnx.split(layer)
  # One draw from the call's keys or the layer's stream, outside the recomputed function: the
  # recomputation sees the same key, so the same masks.
  drop = layer.comm.dropout if layer.comm is not None else None
  active = drop is not None and drop.rate > 0 and not (
      drop.deterministic if deterministic is None else deterministic)
  key = None
  if active:
    key = rngs.dropout() if rngs is not None else drop.rngs() if drop.rngs is not None else None

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
