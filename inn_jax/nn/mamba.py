"""Mamba v1 block: the selective state-space memory of each neuron (Eq. 1's Memory_i)."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from inn_jax.nn import neurons
from inn_jax.ops import selective_scan

# PyTorch's default Linear/Conv init (kaiming_uniform with a=sqrt(5)) is U(+-1/sqrt(fan_in)).
_torch_init = nnx.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
# Which parameters each neuron owns (the rest are shared by the population).
NEURON_PARAMS = {
    "shared": (),  # One Mamba per layer, as the paper's code.
    "ssm": ("A_log", "D", "dt_bias"),  # Each neuron its own time-scales (Eq. 1's Memory_i).
    "full": ("in_proj", "conv", "x_proj", "dt_proj", "dt_bias", "A_log", "D", "out_proj"),
}


class MambaCache(NamedTuple):
  """Recurrent state of one Mamba block: the conv window and the SSM state."""
  conv_BWE: jax.Array  # The last W-1 conv inputs, (*lead, W-1, E).
  ssm_BES: jax.Array   # float32, (*lead, E, S).


class MambaBlock(nnx.Module):
  """in_proj -> causal depthwise conv + SiLU -> x_proj -> dt_proj -> selective scan -> gate -> out.

  x_...LD -> y_...LD for any leading axes. Parameters, shapes and initialisation follow upstream
  mamba_ssm (Mamba v1), so parameter counts match the paper's code exactly. With n_neurons and
  neuron_params "ssm" or "full" (NEURON_PARAMS), those parameters have one slice per neuron and
  x must be x_...NLD.
  """

  def __init__(self, d_model: int, *, d_state: int = 16, d_conv: int = 4, expand: float = 2.0,
               dt_rank: int | str = "auto", dt_min: float = 1e-3, dt_max: float = 0.1,
               dt_init_floor: float = 1e-4, scan_method: str = "auto", scan_chunk: int = 64,
               n_neurons: int | None = None, neuron_params: str = "shared", dtype=jnp.float32,
               rngs: nnx.Rngs):
    if neuron_params not in NEURON_PARAMS:
      raise ValueError(f"neuron_params={neuron_params!r} is not one of {tuple(NEURON_PARAMS)}.")
    if neuron_params != "shared" and not n_neurons:
      raise ValueError(f"neuron_params={neuron_params!r} needs n_neurons.")
    d_inner = expand * d_model
    if d_inner != int(d_inner) or d_inner < 1:
      raise ValueError(f"expand={expand} x d_model={d_model} must be a positive integer width.")
    d_inner = int(d_inner)
    rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
    self.d_inner, self.d_state, self.d_conv, self.dt_rank = d_inner, d_state, d_conv, rank
    self.scan_method, self.scan_chunk, self.dtype = scan_method, scan_chunk, dtype
    own = NEURON_PARAMS[neuron_params]
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

  def init_cache(self, lead: int | tuple[int, ...]) -> MambaCache:
    """An empty state for inputs with leading axes `lead` (batch, or (batch, neurons))."""
    lead = (lead,) if isinstance(lead, int) else tuple(lead)
    return MambaCache(jnp.zeros((*lead, self.d_conv - 1, self.d_inner), self.dtype),
                      jnp.zeros((*lead, self.d_inner, self.d_state), jnp.float32))

  def __call__(self, x, *, cache: MambaCache | None = None, return_cache: bool = False):
    """y (x's shape), or (y, cache) with return_cache; `cache` continues an earlier call."""
    lead, length = x.shape[:-2], x.shape[-2]
    x_E, z_E = jnp.split(self.in_proj(x), 2, axis=-1)
    if cache is None:
      cache = self.init_cache(lead)
    window_WE = jnp.concatenate([cache.conv_BWE.astype(x_E.dtype), x_E], axis=-2)
    w_WE = self.conv_WE[...].astype(x_E.dtype)
    tap = (lambda k: w_WE[:, k][:, None]) if w_WE.ndim == 3 else (lambda k: w_WE[k])
    conv_E = sum(window_WE[..., k:k + length, :] * tap(k) for k in range(self.d_conv))
    x_E = jax.nn.silu(conv_E + neurons.per_step(self.conv_bias_E).astype(x_E.dtype))
    dt_R, B_S, C_S = jnp.split(self.x_proj(x_E), [self.dt_rank, self.dt_rank + self.d_state],
                               axis=-1)
    y_E, ssm_ES = selective_scan(
        x_E, self.dt_proj(dt_R), -jnp.exp(self.A_log_ES[...]), B_S, C_S, self.D_E[...], z_E,
        self.dt_bias_E[...], delta_softplus=True, h0=cache.ssm_BES, return_state=True,
        method=self.scan_method, chunk_size=self.scan_chunk)
    y = self.out_proj(y_E)
    if not return_cache:
      return y
    return y, MambaCache(window_WE[..., window_WE.shape[-2] - (self.d_conv - 1):, :], ssm_ES)

  def step(self, x_BD, cache: MambaCache):
    """One token of recurrent decoding: (y, cache); x_BD has the leading axes of the cache."""
    y, cache = self(x_BD[..., None, :], cache=cache, return_cache=True)
    return y[..., 0, :], cache
