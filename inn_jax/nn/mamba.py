"""Mamba v1 block: the selective state-space memory of each neuron."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from inn_jax.ops import selective_scan

# PyTorch's default Linear/Conv init (kaiming_uniform with a=sqrt(5)) is U(+-1/sqrt(fan_in)).
_torch_init = nnx.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


class MambaCache(NamedTuple):
  """Recurrent state of one Mamba block: the conv window and the SSM state."""
  conv_BKE: jax.Array  # The last K-1 conv inputs.
  ssm_BES: jax.Array   # float32.


class MambaBlock(nnx.Module):
  """in_proj -> causal depthwise conv + SiLU -> x_proj -> dt_proj -> selective scan -> gate -> out.

  Parameters, shapes and initialisation follow upstream mamba_ssm (Mamba v1), so parameter counts
  match the paper's code exactly.
  """

  def __init__(self, d_model: int, *, d_state: int = 16, d_conv: int = 4, expand: int = 2,
               dt_rank: int | str = "auto", dt_min: float = 1e-3, dt_max: float = 0.1,
               dt_init_floor: float = 1e-4, scan_method: str = "auto", scan_chunk: int = 64,
               dtype=jnp.float32, rngs: nnx.Rngs):
    d_inner = expand * d_model
    rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
    self.d_inner, self.d_state, self.d_conv, self.dt_rank = d_inner, d_state, d_conv, rank
    self.scan_method, self.scan_chunk, self.dtype = scan_method, scan_chunk, dtype
    linear = lambda i, o, **kw: nnx.Linear(i, o, dtype=dtype, rngs=rngs,
                                           **{"kernel_init": _torch_init, **kw})
    self.in_proj = linear(d_model, 2 * d_inner, use_bias=False)
    bound = 1 / math.sqrt(d_conv)  # Depthwise: fan_in is the kernel width.
    self.conv_KE = nnx.Param(jax.random.uniform(rngs.params(), (d_conv, d_inner), minval=-bound,
                                                maxval=bound))
    self.conv_bias_E = nnx.Param(jax.random.uniform(rngs.params(), (d_inner,), minval=-bound,
                                                    maxval=bound))
    self.x_proj = linear(d_inner, rank + 2 * d_state, use_bias=False)
    std = rank ** -0.5

    def dt_bias_init(key, shape, dtype=jnp.float32):
      dt = jnp.exp(jax.random.uniform(key, shape, dtype) * (math.log(dt_max) - math.log(dt_min))
                   + math.log(dt_min))
      dt = jnp.maximum(dt, dt_init_floor)
      return dt + jnp.log(-jnp.expm1(-dt))  # softplus^-1(dt)

    self.dt_proj = linear(rank, d_inner, use_bias=True, bias_init=dt_bias_init,
                          kernel_init=lambda key, shape, dtype=jnp.float32: jax.random.uniform(
                              key, shape, dtype, -std, std))
    self.A_log_ES = nnx.Param(jnp.log(jnp.broadcast_to(
        jnp.arange(1, d_state + 1, dtype=jnp.float32), (d_inner, d_state))))
    self.D_E = nnx.Param(jnp.ones((d_inner,)))
    self.out_proj = linear(d_inner, d_model, use_bias=False)

  def init_cache(self, batch_size: int) -> MambaCache:
    return MambaCache(jnp.zeros((batch_size, self.d_conv - 1, self.d_inner), self.dtype),
                      jnp.zeros((batch_size, self.d_inner, self.d_state), jnp.float32))

  def __call__(self, x_BLD, *, cache: MambaCache | None = None, return_cache: bool = False):
    """y_BLD, or (y_BLD, cache) with return_cache; `cache` continues an earlier call."""
    batch, length, _ = x_BLD.shape
    xz_BLE2 = self.in_proj(x_BLD)
    x_BLE, z_BLE = jnp.split(xz_BLE2, 2, axis=-1)
    if cache is None:
      cache = self.init_cache(batch)
    window_BKE = jnp.concatenate([cache.conv_BKE.astype(x_BLE.dtype), x_BLE], axis=1)
    w_KE = self.conv_KE[...].astype(x_BLE.dtype)
    conv_BLE = sum(window_BKE[:, k:k + length] * w_KE[k] for k in range(self.d_conv))
    x_BLE = jax.nn.silu(conv_BLE + self.conv_bias_E[...].astype(x_BLE.dtype))
    dbc = self.x_proj(x_BLE)
    dt_BLR, B_BLS, C_BLS = jnp.split(dbc, [self.dt_rank, self.dt_rank + self.d_state], axis=-1)
    delta_BLE = dt_BLR @ self.dt_proj.kernel[...].astype(dt_BLR.dtype)
    y_BLE, ssm_BES = selective_scan(
        x_BLE, delta_BLE, -jnp.exp(self.A_log_ES[...]), B_BLS, C_BLS, self.D_E[...], z_BLE,
        self.dt_proj.bias[...], delta_softplus=True, h0=cache.ssm_BES, return_state=True,
        method=self.scan_method, chunk_size=self.scan_chunk)
    y_BLD = self.out_proj(y_BLE)
    if not return_cache:
      return y_BLD
    return y_BLD, MambaCache(window_BKE[:, window_BKE.shape[1] - (self.d_conv - 1):], ssm_BES)

  def step(self, x_BD, cache: MambaCache):
    """One token of recurrent decoding: (y_BD, cache)."""
    y_B1D, cache = self(x_BD[:, None], cache=cache, return_cache=True)
    return y_B1D[:, 0], cache
