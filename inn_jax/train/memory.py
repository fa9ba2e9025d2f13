"""What a compiled step needs, what a device has, and the fewest micro-batches that fit."""

from __future__ import annotations

import pathlib

GIB = 2 ** 30


class StepMemoryError(MemoryError):
  """A compiled step needs more memory than the device has; the message names the fix."""


def budget(device) -> float:
  """Bytes a compiled step may use on `device`: 90% of an accelerator's memory, or 80% of the host
  memory available now (CPU); 0 when unknown."""
  if device.platform != "cpu":
    return 0.9 * ((device.memory_stats() or {}).get("bytes_limit", 0))
  meminfo = pathlib.Path("/proc/meminfo")
  lines = meminfo.read_text().splitlines() if meminfo.exists() else []
  kib = next((int(x.split()[1]) for x in lines if x.startswith("MemAvailable:")), 0)
  return 0.8 * kib * 1024


def step_bytes(compiled) -> int:
  """XLA's estimate of one device's memory for a compiled step (donated buffers counted once)."""
  m = compiled.memory_analysis()
  return (m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
          - m.alias_size_in_bytes)


def fit(compile_with, batch_shape, rows: int, microbatches: int, limit: float, *, key: str,
        shrink: str):
  """(compiled, k) from `compile_with(k)`: k = `microbatches`, or with 0 the fewest of 1, 2, 4, ...
  (dividing the batch into slices that split evenly over `rows` devices) whose step needs at most
  `limit` bytes (0: no limit). Raises StepMemoryError naming config `key` and what to `shrink`."""
  batch = batch_shape[0]
  ks = [microbatches] if microbatches else [2 ** i for i in range(batch.bit_length())
                                           if batch % (2 ** i * rows) == 0]
  for k in ks:
    compiled = compile_with(k)
    need = step_bytes(compiled)
    if not limit or need <= limit:
      return compiled, k
  fix = (f"set --config.{key}=0 to use the fewest micro-batches that fit" if microbatches
         else f"lower {shrink} or add devices")
  raise StepMemoryError(
      f"{key}: the step needs {need / GIB:.2f} GiB per device with {k} micro-batch(es) of "
      f"{batch // k} x {batch_shape[1]}, but {limit / GIB:.2f} GiB is available; {fix}, or set "
      "model.remat=true (INN).")


def split_rows(a, k: int):
  """(B, ...) -> (k, B/k, ...); slice j holds rows j, j + k, ...: with B % (k * devices) == 0 each
  device keeps its own rows."""
  return a.reshape(-1, k, *a.shape[1:]).swapaxes(0, 1)


def join_rows(a):
  """The inverse of split_rows: (k, B/k, ...) -> (B, ...)."""
  return a.swapaxes(0, 1).reshape(-1, *a.shape[2:])
