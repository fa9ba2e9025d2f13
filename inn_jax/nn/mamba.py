"""Mamba v1 block: the selective state-space memory of each neuron (Eq. 1's Memory_i)."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from inn_jax import sharding, typed
from inn_jax.nn import neurons
from inn_jax.ops import ScanMethod, selective_scan

# PyTorch's default Linear/Conv init (kaiming_uniform with a=sqrt(5)) is U(+-1/sqrt(fan_in)).
_torch_init = nnx.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
# Which parameters each neuron owns (the rest are shared by the population).
NEURON_PARAMS = {
    "shared": (),  # One Mamba per layer, as the paper's code.
    "ssm": ("A_log", "D", "dt_bias"),  # Each neuron its own time-scales (Eq. 1's Memory_i).
    "full": ("in_proj", "conv", "x_proj", "dt_proj", "dt_bias", "A_log", "D", "out_proj"),
}


NeuronParams = Literal["shared", "ssm", "full"]


@dataclasses.dataclass(frozen=True)
class MambaConfig(typed.Config):
  """The memory: one Mamba v1 block (upstream mamba_ssm's options and initialisation).

  Attributes:
    d_state: S, the SSM state size per channel.
    d_conv: W, the causal depthwise convolution's width.
    expand: E = expand x d_model, the inner width. None: the containing model's default: 2 for
      a block alone and the Mamba stack; in the INN, parameter-matched (each neuron's memory
      2 x d_model / N wide with neuron_params="full", else 2).
    dt_rank: R, the rank of the time-step projection; "auto" is ceil(d_model / 16).
    dt_min, dt_max, dt_init_floor: the time steps' initial range (upstream's).
    scan_method: how the selective scan runs (inn_jax.ops.selective_scan).
    scan_chunk: time steps per chunk of the chunked scans.
    neuron_params: which parameters each neuron of a population owns (NEURON_PARAMS): "shared"
      (one Mamba, the paper's code), "ssm" (own A, D, dt bias), "full" (own everything). None:
      the containing model's default: "full" in the INN and for a block given n_neurons (Eq. 1's
      Memory_i), "shared" without neurons. The paper code's identical neurons ("shared" in an
      INN) are had only by asking (INNConfig.paper_code()).

  A field left None keeps the containing model's form, so INNConfig(memory=MambaConfig(
  d_state=8)) changes the state size of the INN's default memory and nothing else.
  """
  d_state: int = 16
  d_conv: int = 4
  expand: float | None = None
  dt_rank: int | Literal["auto"] = "auto"
  dt_min: float = 1e-3
  dt_max: float = 0.1
  dt_init_floor: float = 1e-4
  scan_method: ScanMethod = "auto"
  scan_chunk: int = 64
  neuron_params: NeuronParams | None = None

  def with_defaults(self, *, expand: float | None, neuron_params: NeuronParams) -> MambaConfig:
    """This config with the fields left None (the model's defaults) set to these."""
    return self.replace(expand=expand if self.expand is None else self.expand,
                        neuron_params=neuron_params if self.neuron_params is None
                        else self.neuron_params)

  def check(self):
    typed.positive("MambaConfig", d_state=self.d_state, d_conv=self.d_conv,
                   scan_chunk=self.scan_chunk, dt_min=self.dt_min, dt_max=self.dt_max)
    if self.expand is not None:
      typed.positive("MambaConfig", expand=self.expand)
    if self.dt_rank != "auto":
      typed.positive("MambaConfig", dt_rank=self.dt_rank)


class MambaCache(NamedTuple):
  """Recurrent state of one Mamba block (leading axes `lead`: (B,), or (B, N) in the INN)."""
  conv_window: jax.Array  # The last W-1 conv inputs, (*lead, W-1, E).
  ssm_state: jax.Array  # float32, (*lead, E, S).


class MambaBlock(nnx.Module):
  """in_proj -> causal depthwise conv + SiLU -> x_proj -> dt_proj -> selective scan -> gate -> out.

  Parameters, shapes and initialisation follow upstream mamba_ssm (Mamba v1), so parameter
  counts match the paper's code exactly. A per-neuron parameter (config.neuron_params "ssm" or
  "full") holds one slice per neuron along a leading axis N; its name gives one neuron's shape.

  Args:
    d_model: D, the width of the inputs and outputs.
    config: the block's options (MambaConfig); expand must be set (not None).
    n_neurons: N, for a population (inputs x_...NLD); None for a plain block.
    dtype: compute dtype (parameters and the scan state stay float32).
    rngs: nnx.Rngs with a "params" stream.

  Call: x (..., L, D) -> y of the same shape, for any leading axes (none: (L, D)); with
  per-neuron parameters x is (..., B, N, L, D) (at least one axis before N).
  """

  def __init__(self, d_model: int, config: MambaConfig = MambaConfig(), *,
               n_neurons: int | None = None, dtype=jnp.float32, rngs: nnx.Rngs):
    cfg = config.with_defaults(expand=2.0, neuron_params="full" if n_neurons else "shared")
    if cfg.neuron_params != "shared" and not n_neurons:
      raise ValueError(f"MambaBlock: neuron_params={cfg.neuron_params!r} needs n_neurons.")
    d_inner = cfg.expand * d_model
    if d_inner != int(d_inner) or d_inner < 1:
      raise ValueError(f"MambaBlock: expand={cfg.expand} x d_model={d_model} must be a positive "
                       "integer width.")
    d_inner = int(d_inner)
    d_state, d_conv, dt_rank = cfg.d_state, cfg.d_conv, cfg.dt_rank
    dt_min, dt_max, dt_init_floor = cfg.dt_min, cfg.dt_max, cfg.dt_init_floor
    rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
    self.d_model, self.n_neurons = d_model, n_neurons
    self.per_neuron = cfg.neuron_params != "shared"
    self.d_inner, self.d_state, self.d_conv, self.dt_rank = d_inner, d_state, d_conv, rank
    self.scan_method, self.scan_chunk, self.dtype = cfg.scan_method, cfg.scan_chunk, dtype
    own = NEURON_PARAMS[cfg.neuron_params]
    n = lambda name: n_neurons if name in own else None
    dense = lambda name, i, o, init=_torch_init: neurons.Dense(
        i, o, kernel_init=init, n_neurons=n(name), dtype=dtype, rngs=rngs)
    uniform = lambda bound: lambda key, shape: jax.random.uniform(key, shape, minval=-bound,
                                                                   maxval=bound)
    self.in_proj = dense("in_proj", d_model, 2 * d_inner)
    bound = 1 / math.sqrt(d_conv)  # Depthwise: fan_in is the kernel width.
    self.conv_WE = neurons.param(uniform(bound), rngs.params(), (d_conv, d_inner), n("conv"))
    self.conv_bias_E = neurons.param(uniform(bound), rngs.params(), (d_inner,), n("conv"))
    self.x_proj = dense("x_proj", d_inner, rank + 2 * d_state)
    self.dt_proj = dense("dt_proj", rank, d_inner, lambda key, shape, dtype=jnp.float32:
                         uniform(rank ** -0.5)(key, shape))

    def dt_bias_init(key, shape):
      dt = jnp.exp(jax.random.uniform(key, shape) * (math.log(dt_max) - math.log(dt_min))
                   + math.log(dt_min))
      dt = jnp.maximum(dt, dt_init_floor)
      return dt + jnp.log(-jnp.expm1(-dt))  # softplus^-1(dt)

    self.dt_bias_E = neurons.param(dt_bias_init, rngs.params(), (d_inner,), n("dt_bias"))
    self.A_log_ES = neurons.param(lambda _, shape: jnp.log(jnp.broadcast_to(
        jnp.arange(1, d_state + 1, dtype=jnp.float32), shape)), None, (d_inner, d_state),
        n("A_log"))
    self.D_E = neurons.param(lambda _, shape: jnp.ones(shape), None, (d_inner,), n("D"))
    self.out_proj = dense("out_proj", d_inner, d_model)

  def init_cache(self, lead: int | tuple[int, ...] = ()) -> MambaCache:
    """An empty state for inputs with leading axes `lead` (batch, (batch, neurons), or ())."""
    lead = (lead,) if isinstance(lead, int) else tuple(lead)
    return MambaCache(jnp.zeros((*lead, self.d_conv - 1, self.d_inner), self.dtype),
                      jnp.zeros((*lead, self.d_inner, self.d_state), jnp.float32))

  def _check(self, x):
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) < 2 or shape[-1] != self.d_model:
      raise ValueError(f"MambaBlock: x must be (..., L, D) with D = d_model = {self.d_model}, "
                       f"got shape {shape}.")
    if self.per_neuron and (len(shape) < 4 or shape[-3] != self.n_neurons):
      raise ValueError(f"MambaBlock: with per-neuron parameters x must be (..., B, N, L, D) with "
                       f"N = n_neurons = {self.n_neurons} third from last, got shape {shape}; "
                       "put the neuron axis before time (x_BNLD); a 3-D input is ambiguous "
                       "((B, L, D) or (N, L, D)): give one population as x[None].")

  def __call__(self, x, *, cache: MambaCache | None = None, return_cache: bool = False):
    """y (x's shape), or (y, cache) with return_cache; `cache` (init_cache(x.shape[:-2])) continues
    an earlier call."""
    self._check(x)
    if x.ndim == 2:  # (L, D): one sequence, e.g. under nnx.vmap over examples.
      out = self(x[None], cache=None if cache is None else jax.tree.map(lambda c: c[None], cache),
                 return_cache=return_cache)
      return jax.tree.map(lambda a: a[0], out)
    lead, length = x.shape[:-2], x.shape[-2]
    x_E, z_E = jnp.split(self.in_proj(x), 2, axis=-1)
    if cache is None:
      cache = self.init_cache(lead)
    # Laid out as the inputs' leading (batch, neurons) axes (an Explicit mesh needs it).
    cache = jax.tree.map(lambda c: sharding.constrain(c, *sharding.POPULATION[:len(lead)]), cache)
    window_WE = jnp.concatenate([cache.conv_window.astype(x_E.dtype), x_E], axis=-2)
    w_WE = neurons.value(self.conv_WE).astype(x_E.dtype)
    tap = (lambda k: w_WE[:, k][:, None]) if w_WE.ndim == 3 else (lambda k: w_WE[k])
    conv_E = sum(window_WE[..., k:k + length, :] * tap(k) for k in range(self.d_conv))
    x_E = jax.nn.silu(conv_E + neurons.per_step(self.conv_bias_E).astype(x_E.dtype))
    dt_R, B_S, C_S = jnp.split(self.x_proj(x_E), [self.dt_rank, self.dt_rank + self.d_state],
                               axis=-1)
    y_E, ssm_ES = selective_scan(
        x_E, self.dt_proj(dt_R), -jnp.exp(neurons.value(self.A_log_ES)), B_S, C_S,
        neurons.value(self.D_E), z_E, neurons.value(self.dt_bias_E), delta_softplus=True,
        h0=cache.ssm_state, return_state=True,
        method=self.scan_method, chunk_size=self.scan_chunk)
    y = self.out_proj(y_E)
    if not return_cache:
      return y
    return y, MambaCache(window_WE[..., window_WE.shape[-2] - (self.d_conv - 1):, :], ssm_ES)

  def step(self, x_BD, cache: MambaCache):
    """One token of recurrent decoding: (y, cache); x_BD has the leading axes of the cache."""
    y, cache = self(x_BD[..., None, :], cache=cache, return_cache=True)
    return y[..., 0, :], cache
