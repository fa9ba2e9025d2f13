"""Model summary: matmul FLOPs against hand counts, parameters per module against the paper
code's counts, and `python -m inn_jax.summary`."""

import json

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from inn_jax import bench
from inn_jax import summary as summary_tool
from inn_jax.train import config as config_lib
from inn_jax.train import flops, model_summary
from tests import tiny as testing
from tests import train_cli


def test_bench_uses_the_one_counter():
  assert bench.matmul_flops is flops.matmul_flops


def test_train_count_is_the_derived_backward_not_three_forwards():
  """loss(W1, W2) = sum((x @ W1) @ W2) with x a constant: the gradient needs dW2 = h^T g,
  dh = g W2^T and dW1 = x^T dh, but no dx. Forward a + b, backward a + 2b."""
  b_, d0, d1, d2 = 5, 4, 8, 3
  x = jnp.ones((b_, d0))
  loss = lambda w: jnp.sum((x @ w["w1"]) @ w["w2"])
  w = {"w1": jnp.ones((d0, d1)), "w2": jnp.ones((d1, d2))}
  a, b = 2 * b_ * d0 * d1, 2 * b_ * d1 * d2
  assert flops.fn_flops(loss, w) == a + b
  assert flops.fn_flops(jax.value_and_grad(loss), w) == 2 * a + 3 * b


def test_dense_einsum_and_per_token():
  """An embedding (a gather: no matmul), nnx.Linear D -> F and an einsum F -> V per token."""
  B, L, V, D, F = 2, 3, 7, 4, 6

  class Tiny(nnx.Module):
    def __init__(self, rngs):
      self.embed = nnx.Embed(V, D, rngs=rngs)
      self.dense = nnx.Linear(D, F, rngs=rngs)
      self.out_FV = nnx.Param(jnp.ones((F, V)))

    def __call__(self, tokens_BL):
      return jnp.einsum("blf,fv->blv", self.dense(self.embed(tokens_BL)), self.out_FV[...])

  graphdef, params = nnx.split(Tiny(nnx.Rngs(0)))
  forward = lambda p, t: nnx.merge(graphdef, p)(t)

  def train(p, x, y):
    return jax.grad(lambda q: jnp.mean(forward(q, x) * y[..., None]))(p)

  per = flops.per_token(forward, params, train, params, (B, L))
  assert per["forward"] == 2 * D * F + 2 * F * V
  # Each matmul: forward, the gradient of its weight and of its input (the embedding is a
  # parameter, so its gradient needs the dense layer's input gradient too).
  assert per["train"] == 3 * per["forward"]


def _tiny_inn_flops(c, vocab: int, with_scan_contraction: bool) -> float:
  """Matmul FLOPs per token of the tiny shared-neuron INN, by hand from its sizes."""
  m = c.model
  D, N, S, n = m.d_model, m.n_neurons, m.d_state, m.n_layers
  E, R = 2 * D, -(-D // 16)  # expand 2 (shared neurons), dt_rank "auto" = ceil(D / 16).
  memory = 2 * D * 2 * E + 2 * E * (R + 2 * S) + 2 * R * E + 2 * E * D  # in, x, dt, out.
  memory += 2 * E * S if with_scan_contraction else 0  # y = C . h as an einsum.
  # q, k, v and out projections; scores and values over the N neurons (all heads): 4 N D.
  communication = 2 * D * 3 * D + 2 * D * D + 4 * N * D
  return n * N * (memory + communication) + 2 * D * vocab  # The head D -> V.


@pytest.mark.parametrize("method, contraction", [("blocked", False), ("sequential", True)])
def test_inn_flops_per_token_by_hand(tmp_path, method, contraction):
  c = testing.tiny_config(tmp_path, neuron_params="shared", scan_method=method)
  c.mesh.data = 1
  got = model_summary.summarize(c, 9)["flops_per_token"]
  assert got["forward"] == _tiny_inn_flops(c, 9, contraction)
  assert got["train"] == 3 * got["forward"]


def test_remat_recomputation_counts_in_the_train_step(tmp_path):
  c = testing.tiny_config(tmp_path, neuron_params="shared", scan_method="blocked", remat="layer")
  c.mesh.data = 1
  got = model_summary.summarize(c, 9)["flops_per_token"]
  assert got["forward"] == _tiny_inn_flops(c, 9, False)  # The forward is the same.
  # Each layer's forward once more in the backward pass (less what nothing there reads).
  assert 3 * got["forward"] < got["train"] < 4 * got["forward"]


def test_paper_inn_parameters_per_module():
  """The paper code's INN: 4,219,163 (tests/test_inn.py), by module."""
  c = config_lib.table_config("text8", "inn_paper", config_lib.PAPER_SIZES, "text8")
  c.mesh.data = 1
  s = model_summary.summarize(c, 27)
  modules = s["params"]["modules"]
  assert s["params"]["total"] == sum(modules.values()) == 4_219_163
  assert modules["embed"] == 27 * 256 + 27  # Tied table and the head's bias.
  for k in range(6):
    assert modules[f"layers.{k}.memory"] == 437_760  # One shared Mamba (tests/test_mamba.py).
    assert modules[f"layers.{k}.comm"] == 256 * 3 * 256 + 3 * 256 + 256 * 256 + 256
    assert modules[f"layers.{k}.memory_norm"] == modules[f"layers.{k}.comm_norm"] == 512
  assert modules["final_norm"] == 512 and len(modules) == 2 + 6 * 4
  assert s["params"]["tensors"]["layers.0.memory.A_log_ES"] == [512, 16]
  # Per token, by hand as above: the paper sizes on the blocked (CPU) scan.
  if c.model.scan_method == "auto" and jax.default_backend() == "cpu":
    per_neuron = (2 * 256 * 1024 + 2 * 512 * 48 + 2 * 16 * 512 + 2 * 512 * 256
                  + 2 * 256 * 768 + 2 * 256 * 256 + 4 * 32 * 256)
    assert s["flops_per_token"]["forward"] == 6 * 32 * per_neuron + 2 * 256 * 27


def test_mamba_stack_layers_are_whole_modules():
  c = config_lib.table_config("text8", "mamba", config_lib.PAPER_SIZES, "text8")
  modules = model_summary.summarize(c, 27, mesh=None)["params"]["modules"]
  assert modules["layers.0"] == 437_760 and "layers.0.in_proj" not in modules


def test_cli_writes_summary(tmp_path, capsys):
  out = tmp_path / "out"
  got = summary_tool.main(["--config", str(train_cli.REPO / "configs/quickstart.py"),
                           "--config.model.n_layers=3", "--vocab_size", "27", "--out",
                           str(out)])
  saved = json.loads((out / "summary.json").read_text())
  assert saved == json.loads(json.dumps(got))
  assert saved["params"]["total"] == sum(saved["params"]["modules"].values())
  assert {"layers.2.memory", "layers.2.comm", "embed"} <= set(saved["params"]["modules"])
  assert set(saved["flops_per_token"]) == {"forward", "train"}
  text = (out / "summary.md").read_text()
  assert f"| **total** | **{saved['params']['total']:,}** | 100% |" in text
  assert text in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
  spec = str(train_cli.REPO / "configs/quickstart.py")
  err = train_cli.exits_with_one_line(summary_tool.cli, ["--config", spec, "--vocab_size",
                                                         "0"], capsys)
  assert "--vocab_size 0" in err
  err = train_cli.exits_with_one_line(summary_tool.cli, ["--config", spec,
                                                         "--config.model.nope=1"], capsys)
  assert "unknown key 'nope'" in err
  # A workdir holding a run of another model is not overwritten.
  tiny = testing.tiny_config(tmp_path)
  (tmp_path / "workdir").mkdir()
  (tmp_path / "workdir" / "config.json").write_text(json.dumps(
      {**tiny.to_dict(), "model": {**tiny.model.to_dict(), "n_layers": 5}, "resolved": {}},
      default=list))
  err = train_cli.exits_with_one_line(
      summary_tool.cli, ["--config", str(train_cli.config_file(tmp_path, steps=2)),
                         "--vocab_size", "9", "--out", str(tmp_path / "workdir")], capsys)
  assert "model.n_layers: 5 -> 2" in err and "--out" in err


def test_a_text8_summary_needs_no_download_and_writes_nothing(tmp_path, monkeypatch, capsys):
  """Offline, with text8 nowhere on disk: its vocabulary (27) is known, and without --out the
  summary only prints."""
  monkeypatch.setenv("INN_JAX_CACHE", str(tmp_path / "empty-cache"))
  monkeypatch.chdir(tmp_path)
  got = summary_tool.main(["--config", "text8:inn_paper", "--config.model.n_layers=1"])
  # The embedding of a 27-symbol vocabulary: the tied table and the head's bias.
  assert got["params"]["modules"]["embed"] == 27 * 256 + 27
  assert list(tmp_path.iterdir()) == []  # No workdirs/, no cache: nothing written.
  assert "wrote" not in capsys.readouterr().out
  err = train_cli.exits_with_one_line(summary_tool.cli, ["--config", "ptb:lstm"], capsys)
  assert "give --vocab_size N" in err
