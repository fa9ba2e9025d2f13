"""inn_jax.train.evaluate: every target scored once; BPC equals a hand computation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from inn_jax.train import evaluate, runner
from tests import tiny as testing
from inn_jax.train.log import per_token


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  config = testing.tiny_config(tmp_path_factory.mktemp("eval"))
  config.mesh.update(data=1, neuron=1)
  return runner.Run(config)


def nats_by_hand(run, tokens_BL):
  """Sum of -log p(target) of one forward call on the rows tokens_BL (float64 log-softmax)."""
  tokens_BL = np.atleast_2d(tokens_BL)
  forward = jax.jit(lambda p, x: nnx.merge(run.parts.graphdef_eval, p, run.parts.rest)(x),
                    compiler_options=run.compiler_options)
  logits = np.asarray(forward(run.state["params"], jnp.asarray(tokens_BL[:, :-1], jnp.int32)),
                      np.float64)
  logp = logits - logits.max(-1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
  return -np.take_along_axis(logp, tokens_BL[:, 1:, None], -1).sum()


def test_fresh_windows_score_each_target_once(run):
  valid = np.asarray(run.corpus.valid)
  n, length = len(valid) - 1, 16
  assert n % length  # A short last window.
  full = n // length * length  # Independent windows: the full ones as rows, then the rest.
  want = (nats_by_hand(run, np.stack([valid[s:s + length + 1] for s in range(0, full, length)]))
          + nats_by_hand(run, valid[full:]))
  for batch in (1, 8):  # 8: the last batch is padded with masked rows.
    nats, tokens = run.evaluator.score(run.state["params"], valid, batch, length)
    assert tokens == n
    np.testing.assert_allclose(nats, want, rtol=1e-5)
  bpc = run.score(run.state["params"], "valid")["bpc"]
  np.testing.assert_allclose(bpc, want / n / math.log(2), rtol=1e-5)


def test_carried_state_equals_one_long_pass(run):
  valid = np.asarray(run.corpus.valid)
  nats, tokens = run.evaluator.score(run.state["params"], valid, 1, 16, carry=True)
  assert tokens == len(valid) - 1
  np.testing.assert_allclose(nats, nats_by_hand(run, valid), rtol=1e-5)
  # Two rows: each continues its own half of the split.
  nats2, tokens2 = run.evaluator.score(run.state["params"], valid, 2, 16, carry=True)
  half = (len(valid) - 1 + 1) // 2
  want = nats_by_hand(run, valid[:half + 1]) + nats_by_hand(run, valid[half:])
  assert tokens2 == len(valid) - 1
  np.testing.assert_allclose(nats2, want, rtol=1e-5)


def test_max_windows_scores_a_prefix(run):
  valid = np.asarray(run.corpus.valid)
  nats, tokens = run.evaluator.score(run.state["params"], valid, 2, 16, max_windows=3)
  assert tokens == 3 * 2 * 16


def test_per_token_metrics():
  out = per_token(math.log(2) * 1.5, "char")
  assert math.isclose(out["bpc"], 1.5) and math.isclose(out["ppl"], 2 ** 1.5)
  assert "bpc" not in per_token(5.0, "word") and math.isclose(per_token(5.0, "word")["ppl"],
                                                               math.exp(5.0))


def test_carry_modes():
  assert evaluate.carry_modes("inn", "auto") == (False, True)
  assert evaluate.carry_modes("transformer", "auto") == (False,)
  assert evaluate.carry_modes("lstm", "yes") == (True,)
  assert evaluate.carry_modes("mamba", "no") == (False,)
  with pytest.raises(ValueError, match="needs a recurrent model"):
    evaluate.carry_modes("transformer", "yes")
  with pytest.raises(ValueError, match="carry_state='maybe'"):
    evaluate.carry_modes("inn", "maybe")
  assert jax.device_count() == 4


@pytest.mark.parametrize("kind", ["inn", "lstm"])
def test_micro_batched_evaluation_gives_the_same_scores(tmp_path, kind):
  """Fresh and carried windows (the INN's state has batch x neurons rows): k = 1, 2, 4 agree."""
  config = testing.tiny_config(tmp_path, kind)
  config.mesh.update(data=2, neuron=1)
  r = runner.Run(config)
  valid, params = np.asarray(r.corpus.valid), r.state["params"]
  got = {}
  for k in (1, 2, 4):
    ev = evaluate.Evaluator(r.parts.graphdef_eval, r.parts.rest, r.mesh, r.compiler_options, k)
    got[k] = [ev.score(params, valid, 8, 16, carry=c, max_windows=6) for c in (False, True)]
    assert ev._steps[(8, 16)][2] == k
  for k in (2, 4):
    for (nats, count), (nats1, count1) in zip(got[k], got[1]):
      assert count == count1 > 0
      np.testing.assert_allclose(nats, nats1, rtol=2e-6)
  assert got[1][0][0] != got[1][1][0]  # Carrying the state changes the score: it is used.


def test_evaluation_takes_the_fewest_micro_batches_that_fit(run):
  from inn_jax.train import memory
  params, valid = run.state["params"], np.asarray(run.corpus.valid)
  need = {}
  for k in (1, 2):
    ev = evaluate.Evaluator(run.parts.graphdef_eval, run.parts.rest, run.mesh,
                            run.compiler_options, k)
    need[k] = memory.step_bytes(ev._prepare(params, 8, 16)[0])
  assert need[1] > need[2]
  ev = evaluate.Evaluator(run.parts.graphdef_eval, run.parts.rest, run.mesh,
                          run.compiler_options, 0, need[1] - 1)
  ev.score(params, valid, 8, 16, max_windows=1)
  assert ev._steps[(8, 16)][2] == 2
