"""The analyses on known models, against direct computation, and the CLI on a trained workdir."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from inn_jax import analyze, data
from inn_jax.analyze import analyze as run_analysis
from inn_jax.models import INN, LSTM
from tests.build import make

TINY = dict(d_model=32, n_layers=2, n_neurons=8, n_heads=4, d_state=4, scan_chunk=4)
WORDS = ["the", "king", "and", "queen", "of", "a", "to", "be", "or", "not", "that", "is"]


def tokens(n=300, seed=0):
  return np.random.default_rng(seed).integers(0, 27, n).astype(np.uint8)


def make_workdir(root, *, train: bool = True):
  """A tiny INN workdir made by the trainer: trained 2 steps (train=True), or its initial state
  saved as the best checkpoint through the trainer's Run and Checkpoints (fast)."""
  from inn_jax import train as trainer
  text = " ".join(np.random.default_rng(0).choice(WORDS, 3000))
  (root / "corpus.txt").write_text(text)
  model = trainer.paper_model("inn", paper=False, d_model=16, n_layers=2, n_neurons=4,
                              n_heads=2, d_state=4, scan_chunk=8)
  c = trainer.base_config("tiny", model, dataset="text_file", path=str(root / "corpus.txt"),
                          normalize="text8", batch_size=4, seq_len=32, eval_batch_size=4)
  c.workdir = str(root / "workdir")
  c.train.update(steps=2, log_every=1, eval_every=2, save_every=2, eval_windows=1,
                 async_save=False)
  c.log.update(tensorboard=False, progress=False)
  c.eval.update(splits=("valid",), carry_state="no")
  if train:
    trainer.train(c)
  else:
    run = trainer.Run(c)
    run.record(0)  # config.json and vocab.json, as a first start writes them.
    run.checkpoints.save(0, run.state, {"step": 0, "tokens_seen": 0, "train_time": 0.0},
                         best=True)
    run.checkpoints.close()
  return root / "workdir"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  return make_workdir(tmp_path_factory.mktemp("analyze"))


def inn(**kw):
  model = make("inn", 27, **TINY, **kw, rngs=nnx.Rngs(params=0, dropout=1))
  model.eval()
  return model


def test_paper_faithful_model_is_uniform_with_zero_diversity():
  copies = inn(neuron_identity="none", neuron_params="shared")
  report = run_analysis(copies, tokens(), batch_size=4, seq_len=16)
  c = report["connectivity"]
  assert c["uniform"] and c["max_deviation_from_uniform"] == 0.0
  assert all(l["hubs"] == [] and l["specialists"] == [] and l["average_degree"] == 0.0
             for l in c["layers"])
  assert report["diversity"]["layers"] == [0.0, 0.0]
  for layer in report["activations"]["layers"]:  # Copies: every neuron has the same statistics.
    assert len(set(layer["mean"])) == 1 and len(set(layer["sparsity"])) == 1


# At initialisation the default form's neurons differ only by their memories' outputs, a small
# part of the residual stream (measured 1.3e-3 and 2.3e-3); a learned identity adds 0.4.
@pytest.mark.parametrize("kw,least", [({}, 1e-4), (dict(neuron_identity="embedding"), 0.1)])
def test_distinct_neurons_have_nonzero_diversity(kw, least):
  report = run_analysis(inn(**kw), tokens(), batch_size=4, seq_len=16)
  assert all(d > least for d in report["diversity"]["layers"])
  assert not report["connectivity"]["uniform"]


def test_figures_equal_direct_computation():
  """5 windows of 16 in batches of 2 (a padded last batch): the sums over batches equal one pass
  over all windows, computed here from the sown intermediates with NumPy."""
  model, x = inn(), tokens(90)
  report = run_analysis(model, x, batch_size=2, seq_len=16, code_len=10)
  x_WL = jnp.asarray(x[:80].reshape(5, 16), jnp.int32)
  model.capture()
  _, sown = nnx.capture(model, nnx.Intermediate)(x_WL)
  model.capture(False)
  flat = {tuple(map(str, k)): v.get_value() for k, v in nnx.to_flat_state(sown)}
  att = [np.asarray(flat[("layers", str(i), "comm", "attention_THNN")][0], np.float64)
         for i in range(2)]
  np.testing.assert_allclose(report["connectivity"]["mean_attention_LHNN"],
                             [a.mean(0) for a in att], rtol=1e-5, atol=1e-7)
  for i, h in enumerate(flat[("neurons_BNLD",)]):
    a_NX = np.asarray(h, np.float64).mean(-1).transpose(1, 0, 2).reshape(8, -1)
    got = report["activations"]["layers"][i]
    np.testing.assert_allclose(got["mean"], a_NX.mean(1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["variance"], a_NX.var(1), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(got["sparsity"], (np.abs(a_NX) < 0.1).mean(1))
    np.testing.assert_allclose(report["population_coding"]["activations_NL"][i],
                               np.asarray(h).mean(-1)[0, :, :10], rtol=1e-5, atol=1e-6)
  assert report["tokens_analyzed"] == 80 and report["windows"] == 5


def test_static_communication_has_no_graph_but_statistics():
  report = run_analysis(inn(communication="static"), tokens(), batch_size=4, seq_len=16)
  assert "skipped" in report["connectivity"]
  assert len(report["activations"]["layers"]) == 2


def test_only_an_inn_is_analysed():
  with pytest.raises(ValueError, match="study an INN's neurons; this is a LSTM"):
    run_analysis(make("lstm", 27, hidden=8, n_layers=1, rngs=nnx.Rngs(0)), tokens())


def test_load_restores_the_trained_parameters(trained):
  """The loaded model scores the valid split as the trainer reported for its best checkpoint."""
  loaded = analyze.load_for_analysis(trained)
  assert loaded.meta["step"] == 2 and loaded.vocab.size == 27
  graphdef, state = nnx.split(loaded.model)
  forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
  nats, count = 0.0, 0
  for x, y, mask in data.eval_batches(loaded.corpus.valid, 4, 32):
    nll = optax.softmax_cross_entropy_with_integer_labels(forward(state, x), y)
    nats, count = nats + float((nll * mask).sum()), count + int(mask.sum())
  results = json.loads((trained / "results.json").read_text())
  assert nats / count / math.log(2) == pytest.approx(results["valid_bpc"], rel=1e-5)


def test_cli_end_to_end(trained, tmp_path):
  out = tmp_path / "report"
  analyze.main(["--workdir", str(trained), "--split", "valid", "--out", str(out)])
  report = json.loads((out / "report.json").read_text())
  assert report["step"] == 2 and report["split"] == "valid"
  assert report["tokens_analyzed"] == 544  # 552 valid tokens -> 17 windows of the run's 32.
  md = (out / "report.md").read_text()
  for name in report["plots"].values():
    assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"({name})" in md
  assert set(report["plots"]) == {"attention", "in_degree", "activations", "population_coding",
                                  "diversity"}


def test_cli_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json not found"):
    analyze.main(["--workdir", str(tmp_path), "--out", str(tmp_path / "o")])
  with pytest.raises(SystemExit):
    analyze.main(["--workdir", str(tmp_path), "--out", str(tmp_path / "o"), "--batch_size", "0"])
