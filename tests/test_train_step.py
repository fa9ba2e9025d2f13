"""One definition of the train step (inn_jax/train/step.py): the trainer, the model summary's
FLOPs and the benchmarks step exactly what step.build builds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inn_jax import bench
from inn_jax.train import flops, loop, model_summary, runner, step
from inn_jax.train import mesh as mesh_lib
from tests.tiny import tiny_config


def _jaxpr_text(make_step, state, shape):
  tokens = jax.ShapeDtypeStruct(shape, jnp.int32)
  return str(jax.make_jaxpr(make_step(1))(jax.eval_shape(lambda: state), tokens, tokens))


@pytest.fixture(scope="module")
def run_and_parts(tmp_path_factory):
  c = tiny_config(tmp_path_factory.mktemp("step"), "inn")
  c.model.attn_dropout = 0.1  # Dropout keys are part of what must agree.
  r = runner.Run(c)
  return c, r, step.build(c, r.corpus.vocab.size)


def test_the_trainer_and_the_benchmark_trace_the_same_step(run_and_parts, monkeypatch):
  c, r, parts = run_and_parts
  want = _jaxpr_text(parts.make_step, parts.init_state(), parts.shape)
  assert "adam" in want.lower() or "sqrt" in want  # The optimizer is in the step.
  assert _jaxpr_text(r.parts.make_step, r.state, parts.shape) == want
  monkeypatch.setattr(bench, "VOCAB", r.corpus.vocab.size)
  b = bench.train_parts(c)
  assert _jaxpr_text(b.make_step, b.state, b.shape) == want
  # A different optimizer setting gives a different step: the comparison can fail.
  other = c.copy_and_resolve_references()
  other.optim.clip_norm = 0.0 if c.optim.clip_norm else 1.0
  changed = step.build(other, r.corpus.vocab.size)
  assert _jaxpr_text(changed.make_step, changed.init_state(), parts.shape) != want


def test_the_summary_counts_the_step_the_trainer_runs(run_and_parts):
  c, r, parts = run_and_parts
  summary = model_summary.summarize(c, r.corpus.vocab.size)
  tokens = jax.ShapeDtypeStruct(parts.shape, jnp.int32)
  state = jax.eval_shape(parts.init_state)
  with jax.set_mesh(parts.mesh):
    train = flops.fn_flops(parts.make_step(1), state, tokens, tokens)
    forward = flops.fn_flops(parts.forward, state["params"], tokens)
  n = np.prod(parts.shape)
  assert summary["flops_per_token"] == {"forward": forward / n, "train": train / n}
  assert r.model_summary()["flops_per_token"] == summary["flops_per_token"]


def test_a_built_step_trains_as_the_trainer_does(run_and_parts):
  """One compiled step of step.build's parts from the placed initial state gives the trainer's
  first-step loss and parameters (same init seeds, schedule and dropout keys)."""
  c, r, parts = run_and_parts
  x_BL = jnp.asarray(np.arange(np.prod(parts.shape)).reshape(parts.shape) % 9, jnp.int32)
  y_BL = jnp.roll(x_BL, -1, axis=1)
  outs = []
  for p, state in ((parts, parts.placed_state()), (r.parts, r.parts.placed_state())):
    compiled = loop.compile_train_step(p.make_step(1), state, p.shape, p.mesh)
    with jax.set_mesh(p.mesh):
      outs.append(compiled(state, x_BL, y_BL))
  (s1, m1), (s2, m2) = outs
  assert float(m1["loss"]) == float(m2["loss"]) and bool(m1["finite"])
  jax.tree.map(np.testing.assert_array_equal, s1["params"], s2["params"])


def test_abstract_state_is_the_trainers_layout(run_and_parts):
  """parts.abstract_state() (nothing allocated) has the shapes, dtypes and shardings of the
  trainer's placed state: what a checkpoint restores into."""
  _, r, parts = run_and_parts
  want, got = r.abstract_state(), parts.abstract_state()
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert isinstance(a, jax.ShapeDtypeStruct) and (a.shape, a.dtype) == (b.shape, b.dtype)
    assert a.sharding.is_equivalent_to(b.sharding, len(a.shape))


def test_random_batch_is_placed_as_the_trainer_places_rows(run_and_parts):
  _, _, parts = run_and_parts
  x_BL, y_BL = parts.random_batch(vocab_size=7, seed=3)
  assert x_BL.shape == y_BL.shape == parts.shape
  assert x_BL.sharding.is_equivalent_to(mesh_lib.batch_sharding(parts.mesh), 2)
  np.testing.assert_array_equal(np.asarray(x_BL)[:, 1:], np.asarray(y_BL)[:, :-1])
  assert 0 <= int(np.min(x_BL)) and int(np.max(x_BL)) < 7
