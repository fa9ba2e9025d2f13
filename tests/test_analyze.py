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


def workspace_inn(n=8, width=None, **kw):
  opts = dict(TINY, n_neurons=n, n_heads=2 if width is None else 1)
  model = make("inn", 27, **{**opts, **kw}, communication="workspace", workspace_slots=4,
               neuron_width=width, rngs=nnx.Rngs(params=0, dropout=1))
  model.eval()
  return model


def test_workspace_write_shares_and_readers_equal_direct_computation():
  """The write share (N / m) sum_s w[s, n] and the readers per slot, from the analysis's batched
  sums, against the weights the model sows in one pass, averaged here by NumPy."""
  model = workspace_inn()
  x = tokens(4 * 16).reshape(4, 16).astype(np.int32)
  report = run_analysis(model, x.reshape(-1), batch_size=3, seq_len=16, max_tokens=0)
  assert "skipped" in report["connectivity"] and "skipped" not in report["workspace"]
  model.capture()
  _, sown = nnx.capture(model, nnx.Intermediate)(x)
  flat = {(k[1], k[-1]): np.asarray(v.get_value()[0], np.float64)
          for k, v in nnx.to_flat_state(sown) if k[-1] in ("write_BLmHN", "read_BNLHm")}
  for layer in report["workspace"]["layers"]:
    w_mN = flat[(layer["layer"], "write_BLmHN")].mean((0, 1, 3))
    r_Nm = flat[(layer["layer"], "read_BNLHm")].mean((0, 2, 3))
    np.testing.assert_allclose(layer["write_share"], w_mN.sum(0) * 8 / 4, rtol=1e-5)
    assert math.isclose(sum(layer["write_share"]), 8, rel_tol=1e-6)
    assert layer["readers_per_slot"] == (r_Nm > 1 / 4 * (1 + 1e-6)).sum(0).tolist()
    assert layer["hubs"] == np.flatnonzero(w_mN.sum(0) * 2 >= 1.5).tolist()


def test_a_workspace_has_roles_against_the_nulls():
  model, init = workspace_inn(), workspace_inn()
  roles = analyze.neuron_roles(model, init, tokens(512), seq_len=32, max_tokens=512,
                               bootstrap=20, shuffles=5)
  assert len(roles["layers"]) == 2 and "hub_threshold" in json.dumps(roles)


@pytest.mark.parametrize("communication", ["attention", "workspace"])
def test_a_population_of_128_is_drawn_in_blocks(tmp_path, communication):
  """N=128 narrow neurons: the N x N attention and the slot-by-neuron weights are kept and
  drawn as 64 blocks of 2 neurons, population coding samples 64 neurons; the per-neuron shares
  stay in the JSON."""
  model = make("inn", 27, d_model=16, n_layers=1, n_neurons=128, neuron_width=1, n_heads=1,
               d_state=4, scan_chunk=4, communication=communication, workspace_slots=4,
               rngs=nnx.Rngs(params=0, dropout=1))
  model.eval()
  report = run_analysis(model, tokens(64), batch_size=2, seq_len=16, max_tokens=64)
  if communication == "attention":
    conn = report["connectivity"]
    assert np.asarray(conn["mean_attention_blocks_LHNN"]).shape == (1, 1, 64, 64)
    assert conn["block_size"] == 2 and len(conn["layers"][0]["in_degree"]) == 128
  else:
    space = report["workspace"]
    assert np.asarray(space["mean_write_blocks_LHmN"]).shape == (1, 1, 4, 64)
    assert np.asarray(space["mean_read_blocks_LHNm"]).shape == (1, 1, 64, 4)
    assert len(space["layers"][0]["write_share"]) == 128
  report.pop("_indegree_TN")
  files = analyze.plot(report, tmp_path)
  want = {"attention": "attention", "workspace": "workspace"}[communication]
  assert want in files and (tmp_path / files[want]).stat().st_size > 0
  assert "workspace" in analyze.markdown(report) or communication == "attention"
