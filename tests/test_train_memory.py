"""inn_jax.train.memory: the micro-batch choice, and the paper INN's one-batch step memory."""

import types

import ml_collections
import pytest
from flax import nnx

from inn_jax.models import build_model
from inn_jax.train import loop, memory, optimizer
from inn_jax.train import mesh as mesh_lib
from inn_jax.train.config import PAPER_SIZES, table_config

GIB = memory.GIB


def fake_compile(need_gib: dict):
  """compile_with(k) returning an object whose memory_analysis() reports need_gib[k] GiB."""
  def compile_with(k):
    analysis = types.SimpleNamespace(temp_size_in_bytes=int(need_gib[k] * GIB),
                                     argument_size_in_bytes=0, output_size_in_bytes=0,
                                     alias_size_in_bytes=0)
    return types.SimpleNamespace(k=k, memory_analysis=lambda: analysis)
  return compile_with


@pytest.mark.parametrize("fast,limit,want", [
    (3.0, 20.0, 8),  # CPU: the fewest under the fast target, though K=2 would fit the memory.
    (3.0, 0.0, 8),
    (6.0, 20.0, 4),
    (0.0, 20.0, 2),  # Accelerators: the fewest that fit.
    (1.0, 20.0, 2),  # Nothing meets the fast target: the fewest that fit.
])
def test_automatic_choice_prefers_fast_steps_then_fitting_ones(fast, limit, want):
  need = {1: 20.6, 2: 10.4, 4: 5.2, 8: 2.6}
  compiled, k = memory.fit(fake_compile(need), (8, 256), 1, 0, limit * GIB, key="train.mb",
                           shrink="batch", fast=fast * GIB)
  assert k == want == compiled.k


def test_a_fixed_count_ignores_the_fast_target_and_fails_when_it_does_not_fit():
  need = {1: 20.6, 2: 10.4, 4: 5.2, 8: 2.6}
  assert memory.fit(fake_compile(need), (8, 256), 1, 1, 0, key="k", shrink="s",
                    fast=3 * GIB)[1] == 1
  with pytest.raises(memory.StepMemoryError, match=r"k: the step needs 20.60 GiB .* 1 micro"):
    memory.fit(fake_compile(need), (8, 256), 1, 1, 16 * GIB, key="k", shrink="s", fast=3 * GIB)


@pytest.mark.slow
def test_paper_inn_one_batch_step_fits_a_quarter_of_the_reference():
  """The paper's INN (default form, float32) trained on 8 x 256 as ONE batch with remat "rows":
  XLA's memory estimate of the compiled train step is at most 3 GiB, so that with the runtime's
  ~1 GiB the peak stays under a quarter of the paper's PyTorch code's 16.8 GiB peak RSS at the
  same batch (benchmarks/results/cpu/bench_cpu.json measures both in one run). Without remat the
  estimate is about 20.6 GiB; compile only, nothing runs."""
  c = table_config("text8", "inn", PAPER_SIZES, "text8", batch_size=8, seq_len=256)
  c.model.update(dtype="float32", remat="rows")
  model = build_model(c.model, 27, nnx.Rngs(params=0, dropout=1))
  model.train()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tx = optimizer.make_optimizer(c.optim, 100)
  mesh = mesh_lib.make_mesh(ml_collections.ConfigDict(dict(data=1, neuron=1)))
  state = loop.init_state(params, tx)
  step = loop.make_train_step(graphdef, rest, tx, optimizer.schedules(c.optim, 100)[0], 1, 1)
  compiled = loop.compile_train_step(step, state, (8, 256), mesh)
  assert memory.step_bytes(compiled) <= 3 * GIB, memory.step_bytes(compiled) / GIB
