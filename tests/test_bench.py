"""inn_jax.bench: FLOP counting, ratios against the reference, and a tiny end-to-end run."""

import json
import pathlib

import jax
import jax.numpy as jnp
import pytest

from inn_jax import bench


def test_matmul_flops_counts_every_scan_iteration():
  def f(x_BD, w_LDD, v_DE):
    h_BD = jax.lax.scan(lambda c, w: (jnp.tanh(c @ w), None), x_BD, w_LDD)[0]
    return jax.jit(lambda h: h @ v_DE)(h_BD)

  jaxpr = jax.make_jaxpr(f)(jnp.ones((8, 16)), jnp.ones((5, 16, 16)), jnp.ones((16, 3))).jaxpr
  assert bench.matmul_flops(jaxpr) == 5 * 2 * 8 * 16 * 16 + 2 * 8 * 16 * 3


def _report(tok_s, peak_bytes, flops_per_s):
  inn = {"kind": "inn", "size": "paper", "batch": 8, "seq": 256, "dtype": "float32",
         "train_tokens_per_s": tok_s, "forward_tokens_per_s": 2 * tok_s,
         "peak_memory_bytes": peak_bytes, "achieved_flops_per_s": {"analytic": flops_per_s}}
  return {"models": [inn], "matmul": {"float32": {"peak_flops_per_s": 100e9}}}


def test_torch_ratios_and_targets():
  ref = [{"mode": "train", "batch": 8, "seq": 256, "tok_s": 20.0, "peak_rss_gib": 16.0},
         {"mode": "infer", "batch": 8, "seq": 256, "tok_s": 100.0, "peak_rss_gib": 4.0}]
  good = bench.torch_ratios(_report(120.0, 2 * bench.GIB, 60e9), ref)
  assert good["train_tokens_per_s_ratio"] == pytest.approx(6.0)
  assert good["peak_memory_ratio"] == pytest.approx(0.125)
  assert good["fraction_of_matmul_peak"] == pytest.approx(0.6)
  assert good["forward_tokens_per_s_ratio"] == pytest.approx(2.4)
  assert good["same_shape"] and good["inn_size"] == "paper" and all(t["met"] for t in good["targets"].values())
  bad = bench.torch_ratios(_report(40.0, 8 * bench.GIB, 10e9), ref[:1])
  assert not any(t["met"] for t in bad["targets"].values())
  assert "forward_tokens_per_s_ratio" not in bad


@pytest.mark.parametrize("argv, fragment", [
    (["--models", "gpt"], "--models"), (["--sizes", "huge"], "--sizes"),
    (["--scan_methods", "fast"], "--scan_methods"), (["--batch", "0"], "--batch"),
    (["--torch_ref", "/nonexistent/ref.json"], "torch_reference.sh")])
def test_bad_flags_fail_before_any_work(argv, fragment):
  with pytest.raises(ValueError, match=fragment):
    bench.main(argv)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench")
  ref = out / "ref.json"
  ref.write_text(json.dumps({"mode": "train", "batch": 4, "seq": 16, "tok_s": 10.0,
                             "peak_rss_gib": 8.0}) + "\n")
  bench.main(["--sizes", "small", "--models", "inn,lstm", "--scan_methods",
              "blocked,sequential,pallas", "--scan_size", "small", "--batch", "4",
              "--seq", "16", "--warmup", "1", "--steps", "1", "--matmul_sizes", "64",
              "--reps", "2", "--out", str(out), "--torch_ref", str(ref)])
  return out


def test_tiny_run_writes_positive_figures(tiny_run):
  report = json.loads((tiny_run / "bench_cpu.json").read_text())
  assert report["machine"]["backend"] == "cpu" and report["machine"]["cpu_cores"] >= 1
  assert report["matmul"]["float32"]["peak_flops_per_s"] > 0
  assert [(r["kind"], r["size"]) for r in report["models"]] == [("inn", "small"),
                                                               ("lstm", "small")]
  for r in report["models"]:
    assert "error" not in r, r
    assert (r["batch"], r["seq"], r["microbatches"]) == (4, 16, 1)
    for key in ("train_tokens_per_s", "forward_tokens_per_s", "compile_s", "peak_memory_bytes",
                "xla_temp_plus_argument_bytes"):
      assert r[key] > 0, key
    assert r["flops"]["analytic_train_step"] == 3 * r["flops"]["analytic_forward_matmul"] > 0
    assert r["flops"]["xla_train_step"] > 0 and r["achieved_flops_per_s"]["analytic"] > 0
  scans, inn = report["scan_methods"], report["models"][0]
  assert scans["sequential"]["train_tokens_per_s"] > 0 and "skipped" in scans["pallas"]
  assert scans["blocked"] == inn  # CPU's auto method: the model row, not rerun.
  ratios = report["torch_reference"]
  assert ratios["train_tokens_per_s_ratio"] == pytest.approx(inn["train_tokens_per_s"] / 10.0)
  assert not ratios["same_shape"]  # The small INN, not the reference's model.
  assert set(ratios["targets"]) == {"train_tokens_per_s_ratio", "peak_memory_ratio",
                                    "fraction_of_matmul_peak"}


def test_tiny_run_markdown_has_every_table(tiny_run):
  md = (tiny_run / "bench_cpu.md").read_text()
  assert "| model | size | params | batch x seq |" in md
  assert md.count("| small |") == 2
  for section in ("## FLOP/s", "Matmul peak float32", "## INN scan methods",
                  "| sequential | 4 x 16 |", "## Against the paper's PyTorch INN",
                  "NOT like for like"):
    assert section in md, section


def test_flop_ceiling_script(tmp_path):
  """benchmarks/flop_ceiling.py: both variants timed on the same FLOPs; the scan is put back."""
  import importlib.util
  from inn_jax.nn import mamba
  path = pathlib.Path(__file__).parents[1] / "benchmarks" / "flop_ceiling.py"
  spec = importlib.util.spec_from_file_location("flop_ceiling", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  scan = mamba.selective_scan
  report = module.main(["--seq", "8", "--repeats", "1", "--out", str(tmp_path / "c.json")])
  assert mamba.selective_scan is scan
  assert json.loads((tmp_path / "c.json").read_text())["inn"] == report["inn"]
  a, b = report["inn"], report["inn_without_scan"]
  assert a["flops"] == b["flops"] > 0 and (a["batch"], a["seq"]) == (1, 8)
  assert a["fraction_of_matmul_peak"] > 0 and b["fraction_of_matmul_peak"] > 0
