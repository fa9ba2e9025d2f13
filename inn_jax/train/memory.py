"""What a compiled step needs, what a device has, and the fewest micro-batches that fit."""

from __future__ import annotations

import pathlib

import jax

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


def fast_bytes(device) -> float:
  """The most XLA temporaries a step should need to run at full speed on `device`, 0 if no such
  bound. CPUs: a step's temporaries are fresh pages every step, and bigger ones run slower (the
  paper INN's 8 x 256 step as 8, 4 and 2 micro-batches: benchmarks/results/cpu/bench_cpu.md, by
  benchmarks/cpu_table.sh). Accelerators: none."""
  return CPU_FAST_STEP_BYTES if device.platform == "cpu" else 0.0


CPU_FAST_STEP_BYTES = 3 * GIB


def fit(compile_with, batch_shape, rows: int, microbatches: int, limit: float, *, key: str,
        shrink: str, fast: float | None = None):
  """(compiled, k) from `compile_with(k)`: k = `microbatches`, or with 0 the fewest of 1, 2, 4, ...
  (dividing the batch into slices that split evenly over `rows` devices) whose step needs at most
  `fast` bytes (None: fast_bytes of this process's first device; 0: no such target) and,
  failing that, at most `limit` bytes (0: no limit). Raises StepMemoryError naming config `key`
  and what to `shrink`."""
  batch = batch_shape[0]
  ks = [microbatches] if microbatches else [2 ** i for i in range(batch.bit_length())
                                           if batch % (2 ** i * rows) == 0]
  fast = fast_bytes(jax.local_devices()[0]) if fast is None else fast
  compiled = {}

  def need(k):
    if k not in compiled:
      compiled[k] = compile_with(k)
    return step_bytes(compiled[k])

  targets = [limit]
  if fast and not microbatches:
    targets.insert(0, min(fast, limit) if limit else fast)
  for target in targets:
    for k in ks:
      if need(k) <= target or not target:
        return compiled[k], k
  k = ks[-1]
  fix = (f"set --config.{key}=0 to use the fewest micro-batches that fit" if microbatches
         else f"lower {shrink} or add devices")
  raise StepMemoryError(
      f"{key}: the step needs {need(k) / GIB:.2f} GiB per device with {k} micro-batch(es) of "
      f"{batch // k} x {batch_shape[1]}, but {limit / GIB:.2f} GiB is available; {fix}, or set "
      "model.remat=\"rows\" (INN).")


def split_rows(a, k: int):
  """(B, ...) -> (k, B/k, ...); slice j holds rows j, j + k, ...: with B % (k * devices) == 0 each
  device keeps its own rows."""
  return a.reshape(-1, k, *a.shape[1:]).swapaxes(0, 1)


def join_rows(a):
  """The inverse of split_rows: (k, B/k, ...) -> (B, ...)."""
  return a.swapaxes(0, 1).reshape(-1, *a.shape[2:])
