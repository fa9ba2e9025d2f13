"""Sampling: cached decoding equals full forwards, greedy equals argmax re-runs, top_k, the CLI."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from inn_jax import sample
from inn_jax.models import build_model, model_config
from inn_jax.sample import Sampler

TINY = {
    "inn": dict(d_model=32, n_layers=2, n_neurons=4, n_heads=4, d_state=4, scan_chunk=4),
    "mamba": dict(d_model=32, n_layers=2, d_state=4, scan_chunk=4),
    "lstm": dict(hidden=32, n_layers=2),
    "transformer": dict(d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=64),
}


def tiny(kind, seed=0):
  model = build_model(model_config(kind, **TINY[kind]), 27, nnx.Rngs(params=seed, dropout=1))
  model.eval()
  return model


def jitted(model):
  """The model's plain full forward (no cache), compiled: tokens_BL -> logits_BLV."""
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
  return lambda x: forward(state, jnp.asarray(x, jnp.int32))


def prompt(batch=2, length=7, seed=3):
  return np.asarray(jax.random.randint(jax.random.key(seed), (batch, length), 0, 27))


@pytest.mark.parametrize("kind", sorted(TINY))
def test_cached_decoding_equals_full_forward(kind):
  """Prompt pass + one cached step per token give the logits of one pass over the final text."""
  model, prompt_BL = tiny(kind), prompt()
  out = Sampler(model)(prompt_BL, 9, temperature=1.0, seed=1, return_logits=True)
  seq_BL = np.concatenate([prompt_BL, np.asarray(out.tokens_BL)], axis=1)
  full_BLV = jitted(model)(seq_BL)
  p, t = prompt_BL.shape[1], out.tokens_BL.shape[1]
  np.testing.assert_allclose(out.logits_BLV, full_BLV[:, p - 1:p + t - 1], rtol=1e-5, atol=1e-5)


def greedy_reference(model, prompt_BL, length):
  """Argmax of a fresh full forward (no cache) per new token, in a plain Python loop. The forward
  runs over a fixed buffer (compiled once); the models are causal, so later slots do not matter."""
  forward = jitted(model)
  batch, p = prompt_BL.shape
  seq = np.zeros((batch, p + length), np.int32)
  seq[:, :p] = prompt_BL
  for i in range(length):
    seq[:, p + i] = np.argmax(np.asarray(forward(seq))[:, p + i - 1], -1)
  return seq[:, p:]


@pytest.mark.parametrize("kind", ["inn", "transformer"])
def test_greedy_equals_argmax_of_full_forwards(kind):
  model, prompt_BL = tiny(kind), prompt()
  want = greedy_reference(model, prompt_BL, 8)
  sampler = Sampler(model)
  np.testing.assert_array_equal(sampler(prompt_BL, 8, temperature=0.0).tokens_BL, want)
  np.testing.assert_array_equal(sampler(prompt_BL, 8, temperature=1.0, top_k=1, seed=5).tokens_BL,
                                want)


def test_top_k_draws_only_among_the_k_largest():
  model = tiny("inn")
  out = Sampler(model)(prompt(batch=4), 30, temperature=5.0, top_k=2, seed=0, return_logits=True)
  logits, tokens = np.asarray(out.logits_BLV), np.asarray(out.tokens_BL)
  chosen = np.take_along_axis(logits, tokens[..., None], -1)[..., 0]
  second = np.sort(logits, -1)[..., -2]
  assert (chosen >= second).all()
  # A hot temperature with k=2 must use both: else the test could not tell top_k=2 from greedy.
  assert (tokens != logits.argmax(-1)).any()


def test_seed_decides_the_sample():
  sampler, prompt_BL = Sampler(tiny("lstm")), prompt()
  a = sampler(prompt_BL, 40, temperature=1.0, seed=0).tokens_BL
  np.testing.assert_array_equal(a, sampler(prompt_BL, 40, temperature=1.0, seed=0).tokens_BL)
  other = sampler(prompt_BL, 40, temperature=1.0, seed=1).tokens_BL
  assert (np.asarray(a) != np.asarray(other)).any()


def test_a_key_decides_the_sample_as_its_seed_does():
  sampler, prompt_BL = Sampler(tiny("inn")), prompt()
  a = sampler(prompt_BL, 20, key=jax.random.key(7)).tokens_BL
  np.testing.assert_array_equal(a, sampler(prompt_BL, 20, seed=7).tokens_BL)
  assert (np.asarray(a) != np.asarray(sampler(prompt_BL, 20, key=jax.random.key(8)).tokens_BL)
          ).any()
  np.testing.assert_array_equal(  # A raw uint32 key works too.
      a, sampler(prompt_BL, 20, key=jax.random.key_data(jax.random.key(7))).tokens_BL)


def test_top_p_draws_only_from_the_nucleus():
  """Each token lies in the fewest likeliest tokens whose probability reaches top_p (checked
  against the logits it was drawn from, sorted in NumPy), and a hot temperature uses more than
  the top one."""
  out = Sampler(tiny("inn"))(prompt(batch=4), 30, temperature=3.0, top_p=0.5, seed=0,
                             return_logits=True)
  logits, tokens = np.asarray(out.logits_BLV, np.float64) / 3.0, np.asarray(out.tokens_BL)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  order = np.argsort(-probs, -1)
  mass_before = np.cumsum(np.take_along_axis(probs, order, -1), -1) - np.take_along_axis(
      probs, order, -1)
  rank = np.argmax(order == tokens[..., None], -1)
  assert (np.take_along_axis(mass_before, rank[..., None], -1)[..., 0] < 0.5 + 1e-6).all()
  assert (rank > 0).any() and (rank == 0).any()


def test_stop_token_ends_each_row():
  """After a row's first stop token every token is the stop token; lengths_B counts up to it."""
  sampler, prompt_BL = Sampler(tiny("lstm")), prompt(batch=6)
  free = np.asarray(sampler(prompt_BL, 40, temperature=2.0, seed=0).tokens_BL)
  stop = int(np.bincount(free.ravel()).argmax())  # A token these rows do draw.
  out = sampler(prompt_BL, 40, temperature=2.0, seed=0, stop=stop)
  tokens, lengths = np.asarray(out.tokens_BL), np.asarray(out.lengths_B)
  for row, free_row, n in zip(tokens, free, lengths):
    hits = np.flatnonzero(free_row == stop)
    want = hits[0] + 1 if len(hits) else 40
    assert n == want
    np.testing.assert_array_equal(row[:n], free_row[:n])
    assert (row[n:] == stop).all()
  assert (lengths < 40).any()


def test_sampler_leaves_the_model_alone():
  model = tiny("lstm")
  model.train()
  Sampler(model)(prompt(), 2)
  assert not model.dropout.deterministic


@pytest.mark.parametrize("bad,match", [
    (dict(prompt_BP=np.zeros((2, 0), np.int32)), "shape \\(batch, >= 1\\)"),
    (dict(prompt_BP=np.full((1, 3), 27)), "must lie in 0..26"),
    (dict(length=0), "length must be a positive int"),
    (dict(temperature=-1.0), "temperature must be >= 0"),
    (dict(top_k=0), "top_k must be None or an int in 1..27"),
    (dict(top_p=0.0), r"top_p must be None or in \(0, 1\]"),
    (dict(stop=27), "stop must be None or a token id in 0..26"),
    (dict(key=jax.random.key(0), seed=1), "key .* or seed .*, not both"),
    (dict(key=3), "key must be a jax.random key"),
])
def test_bad_arguments(bad, match):
  kw = dict(prompt_BP=prompt(), length=3) | bad
  with pytest.raises(ValueError, match=match):
    Sampler(tiny("mamba"))(kw.pop("prompt_BP"), kw.pop("length"), **kw)


@pytest.fixture(scope="module")
def tiny_workdir(tmp_path_factory):
  from tests.test_analyze import make_workdir
  return make_workdir(tmp_path_factory.mktemp("sample"), train=False)


def test_cli_end_to_end(tiny_workdir, capsys):
  from inn_jax.analyze import load_for_analysis
  text = sample.main(["--workdir", str(tiny_workdir), "--prompt", "the king", "--length", "25",
                      "--temperature", "0"])
  assert len(text) == 25 and set(text) <= set(" abcdefghijklmnopqrstuvwxyz")
  assert capsys.readouterr().out.startswith("the king" + text)
  loaded = load_for_analysis(tiny_workdir)
  ids = loaded.vocab.encode("the king")
  want = greedy_reference(loaded.model, ids[None].astype(np.int32), 25)[0]
  assert text == loaded.vocab.decode(want)


def test_cli_decodes_with_the_run_s_vocabulary_even_without_its_corpus(tmp_path, capsys):
  from inn_jax import analyze
  from inn_jax.train import runner
  from tests import train_cli
  config = train_cli.load(train_cli.config_file(tmp_path, 2, mesh_data=1))
  runner.train(config)  # On a text of the 9 symbols "abcdefgh ".
  argv = ["--workdir", config.workdir, "--prompt", "abc", "--length", "30", "--temperature", "0"]
  text = sample.main(argv)
  assert set(text) <= set("abcdefgh ") and len(text) == 30
  corpus = tmp_path / "tiny.txt"
  corpus.write_text(corpus.read_text().translate(str.maketrans("abcdefgh", "ijklmnop")))
  with pytest.raises(ValueError, match=r"the corpus now has another vocabulary \(9 symbols\) "
                                       r"than the run trained on \(9 symbols"):
    analyze.load_for_analysis(config.workdir)  # Its ids would decode to other symbols.
  assert sample.main(argv) == text  # The same 9 symbols as the run's: vocab.json.
  corpus.unlink()
  assert sample.main(argv) == text  # No corpus at all.
  assert capsys.readouterr().out.endswith("abc" + text + "\n")
