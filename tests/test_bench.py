"""inn_jax.bench: FLOP counting, INN settings, targets against the reference, output folders, the
trainer's automatic micro-batch count, and a tiny end-to-end run."""

import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from inn_jax import bench
from inn_jax.models import inn
from inn_jax.train import loop, memory

# Faster XLA compiles for the tiny models here: speed figures are not checked, only that they
# exist and how the rows are made.
FAST_XLA = {"xla_backend_optimization_level": 0}


def test_matmul_flops_counts_every_scan_iteration():
  def f(x_BD, w_LDD, v_DE):
    h_BD = jax.lax.scan(lambda c, w: (jnp.tanh(c @ w), None), x_BD, w_LDD)[0]
    return jax.jit(lambda h: h @ v_DE)(h_BD)

  jaxpr = jax.make_jaxpr(f)(jnp.ones((8, 16)), jnp.ones((5, 16, 16)), jnp.ones((16, 3))).jaxpr
  assert bench.matmul_flops(jaxpr) == 5 * 2 * 8 * 16 * 16 + 2 * 8 * 16 * 3


def test_configs_are_built_in_code_from_any_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # No configs/ folder here.
  c = bench.job_config("inn", "paper", 8, 256, remat="rows")
  assert (c.name, c.model.remat, c.model.neuron_params) == ("text8:inn_paper", "rows", "shared")
  assert (c.data.batch_size, c.data.seq_len, c.train.microbatches) == (8, 256, 0)
  assert bench.job_config("inn", "small", 4, 16, inn_form="default").name == "text8:inn"
  assert bench.REMATS == inn.REMATS
  with pytest.raises(ValueError, match="only the INN"):
    bench.job_config("lstm", "small", 4, 16, remat="rows")


def test_parse_settings():
  assert bench.parse_settings("1:rows, auto,2:layer", 8) == [
      {"setting": "1:rows", "microbatches": 1, "remat": "rows"},
      {"setting": "auto", "microbatches": 0, "remat": None},
      {"setting": "2:layer", "microbatches": 2, "remat": "layer"}]
  assert bench.setting_label(1, 1, "rows") == "K=1, remat rows"
  assert bench.setting_label(0, 8, "none") == "auto (K=8), remat none"
  assert bench.shape_text(8, 256, 8) == "8 x 256 as 8 micro-batches of 1 x 256"


@pytest.mark.parametrize("argv, fragment", [
    (["--models", "gpt"], "--models"), (["--sizes", "huge"], "--sizes"),
    (["--scan_methods", "fast"], "--scan_methods"), (["--batch", "0"], "--batch"),
    (["--inn_settings", "0"], "--inn_settings '0': bad item '0'; each item is K[:remat]"),
    (["--inn_settings", "1:fast"], "remat one of none, layer, rows; e.g. --inn_settings"),
    (["--inn_settings", "auto,"], "bad item ''"),
    (["--inn_settings", "3", "--batch", "4"], "3 micro-batches do not divide --batch 4"),
    (["--inn_settings", "auto,auto"], "listed twice"),
    (["--torch_ref", "/nonexistent/ref.json"], "torch_reference.sh")])
def test_bad_flags_fail_before_any_work(argv, fragment, tmp_path):
  with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("]", r"\]")) as e:
    bench.main(argv + ["--out", str(tmp_path / "out")])
  assert "\n" not in str(e.value)
  assert not (tmp_path / "out").exists()


def test_cli_flag_error_is_one_line_and_exit_2(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "inn_jax.bench", "--inn_settings", "x"],
                        capture_output=True, text=True, cwd=tmp_path, timeout=120)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert proc.stderr.count("\n") == 1 and "--inn_settings 'x': bad item" in proc.stderr


def test_default_out_is_a_fresh_folder_and_old_files_are_refused(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  out = bench.parse([]).out
  assert out.parent == pathlib.Path("bench-runs") and not out.exists()
  (tmp_path / "old").mkdir()
  (tmp_path / "old" / "bench_cpu.md").write_text("earlier\n")
  with pytest.raises(ValueError, match=r"--out old: holds bench_cpu.md .* pass --overwrite"):
    bench.main(["--out", "old"])
  assert bench.parse(["--out", "old", "--overwrite"]).out == pathlib.Path("old")
  assert (tmp_path / "old" / "bench_cpu.md").read_text() == "earlier\n"


def _row(requested, k, remat, tok_s, peak_gib, batch=8, params=4_219_163):
  return {"kind": "inn", "size": "paper", "form": "paper", "params": params, "batch": batch,
          "seq": 256, "dtype": "float32", "microbatches_requested": requested,
          "microbatches": k, "remat": remat, "label": bench.setting_label(requested, k, remat),
          "train_tokens_per_s": tok_s, "forward_tokens_per_s": 2 * tok_s,
          "peak_memory_bytes": peak_gib * bench.GIB,
          "achieved_flops_per_s": {"analytic": 60e9}}


REF = [{"mode": "train", "batch": 8, "seq": 256, "params": 4_219_163, "tok_s": 20.0,
        "peak_rss_gib": 16.0},
       {"mode": "infer", "batch": 8, "seq": 256, "params": 4_219_163, "tok_s": 100.0,
        "peak_rss_gib": 2.0}]


def _targets(s):
  return {(x["measure"], x["kind"]): x for x in s["targets"]}


def test_torch_ratios_memory_target_on_k1_speed_target_on_auto():
  rows = [_row(1, 1, "rows", 80.0, 3.2), _row(0, 8, "none", 150.0, 3.6),
          _row(2, 2, "none", 100.0, 9.0), {"kind": "lstm", "size": "paper", "error": "x"}]
  report = {"models": rows, "matmul": {"float32": {"peak_flops_per_s": 100e9}}}
  t = bench.torch_ratios(report, REF)
  k1, auto, k2 = t["settings"]
  assert k1["peak_memory_ratio"] == pytest.approx(0.2)
  assert k1["train_tokens_per_s_ratio"] == pytest.approx(4.0)
  assert k1["forward_tokens_per_s_ratio"] == pytest.approx(1.6)
  assert list(_targets(k1)) == [("peak_memory_ratio", "target")]
  assert _targets(k1)[("peak_memory_ratio", "target")]["met"]
  assert k1["ours"] == "8 x 256 as 1 batch, remat rows"
  assert t["reference_text"] == "8 x 256 as 1 batch"
  a = _targets(auto)
  assert set(a) == {("train_tokens_per_s_ratio", "target"), ("train_tokens_per_s_ratio", "goal"),
                    ("fraction_of_matmul_peak", "target")}
  assert auto["train_tokens_per_s_ratio"] == pytest.approx(7.5)
  assert a[("train_tokens_per_s_ratio", "target")]["bound"] == ">= 5.5"
  assert a[("train_tokens_per_s_ratio", "goal")]["bound"] == ">= 7.0"
  assert a[("train_tokens_per_s_ratio", "target")]["met"] and a[("train_tokens_per_s_ratio",
                                                                 "goal")]["met"]
  assert auto["same_model_and_shape"]  # 8 micro-batches, but the same model and batch.
  assert auto["ours"] == "8 x 256 as 8 micro-batches of 1 x 256, remat none"
  assert k2["targets"] == []  # Neither one batch nor the trainer's defaults.
  md = bench._torch_lines(t)
  text = "\n".join(md)
  assert ("| K=1, remat rows | 8 x 256 as 1 batch, remat rows | 8 x 256 as 1 batch | peak "
          "memory, ours / reference | 0.200 | target <= 0.25 | met |") in text
  assert "| auto (K=8), remat none |" in text and "goal >= 7.0 | met |" in text


def test_torch_ratios_not_like_for_like_is_not_met():
  rows = [_row(1, 1, "none", 10.0, 2.0, batch=4), _row(0, 1, "none", 200.0, 2.0,
                                                       params=96_000)]
  t = bench.torch_ratios({"models": rows,
                          "matmul": {"float32": {"peak_flops_per_s": 100e9}}}, REF[:1])
  k1, auto = t["settings"]
  mem = _targets(k1)[("peak_memory_ratio", "target")]
  assert mem["within_bound"] and not mem["like_for_like"] and not mem["met"]
  assert "another shape (4 x 256)" in mem["differs"]
  speed = _targets(auto)[("train_tokens_per_s_ratio", "target")]
  assert speed["within_bound"] and not speed["met"] and "another model" in speed["differs"]
  assert "forward_tokens_per_s_ratio" not in k1
  assert "NOT like for like" in "\n".join(bench._torch_lines(t))
  assert "error" in bench.torch_ratios({"models": rows[:0], "matmul": {}}, REF)


def _fast_compiles(monkeypatch):
  """bench.job_config's configs compile with FAST_XLA (config.compiler_options)."""
  real = bench.job_config

  def fast(*args, **kw):
    c = real(*args, **kw)
    c.compiler_options.update(FAST_XLA)
    return c

  monkeypatch.setattr(bench, "job_config", fast)


def test_auto_row_records_the_trainers_count(monkeypatch):
  """`auto` is train.microbatches=0 through loop.compile_fitting_step: with the fast target
  between a small LSTM's one-batch and two-micro-batch steps, the bench and a direct call of the
  trainer's path both pick two."""
  monkeypatch.setitem(bench.SMALL, "lstm", dict(hidden=16, n_layers=1))
  _fast_compiles(monkeypatch)
  p = bench.train_parts(bench.job_config("lstm", "small", 8, 64))
  need = {k: memory.step_bytes(loop.compile_train_step(p.make_step(k), p.state, p.shape, p.mesh,
                                                       p.compiler_options)) for k in (1, 2)}
  assert need[2] < need[1]
  monkeypatch.setattr(memory, "CPU_FAST_STEP_BYTES", (need[1] + need[2]) / 2)
  r = bench.measure_model("lstm", "small", 8, 64, warmup=0, steps=1, microbatches=0)
  compiled, k = loop.compile_fitting_step(p.make_step, p.state, p.shape, p.mesh, 0,
                                          memory.budget(jax.local_devices()[0]),
                                          p.compiler_options)
  assert (r["microbatches_requested"], r["microbatches"], k) == (0, 2, 2)
  assert r["microbatches_tried"] == [1, 2] and r["xla_estimate_bytes"] == need[2]
  assert r["label"] == "auto (K=2)" and r["shape"] == "8 x 64 as 2 micro-batches of 4 x 64"
  assert r["train_tokens_per_s"] > 0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench")
  ref = out / "ref.json"
  ref.write_text(json.dumps({"mode": "train", "batch": 4, "seq": 8, "tok_s": 10.0,
                             "peak_rss_gib": 8.0}) + "\n")
  with pytest.MonkeyPatch.context() as m:  # The jobs: one CPU device (not conftest's four),
    m.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")  # and faster compiles.
    m.chdir(out)  # The jobs run from any directory.
    bench.main(["--sizes", "small", "--models", "inn", "--inn_settings", "auto",
                "--scan_methods", "cpu_kernel,pallas", "--batch", "4", "--seq", "8",
                "--warmup", "0", "--steps", "1", "--matmul_sizes", "64", "--reps", "1",
                "--out", "run", "--torch_ref", str(ref)])
  return out / "run"


def test_tiny_run_writes_positive_figures(tiny_run):
  report = json.loads((tiny_run / "bench_cpu.json").read_text())
  assert report["machine"]["backend"] == "cpu" and report["machine"]["cpu_cores"] >= 1
  assert report["matmul"]["float32"]["peak_flops_per_s"] > 0
  (r,) = report["models"]
  assert "error" not in r, r
  assert (r["kind"], r["size"], r["form"], r["setting"]) == ("inn", "small", "paper", "auto")
  assert (r["batch"], r["seq"], r["microbatches_requested"], r["microbatches"]) == (4, 8, 0, 1)
  assert r["label"] == "auto (K=1), remat none"
  for key in ("train_tokens_per_s", "forward_tokens_per_s", "compile_s", "peak_memory_bytes",
              "xla_estimate_bytes", "memory_limit_bytes"):
    assert r[key] > 0, key
  assert r["flops"]["analytic_train_step"] == 3 * r["flops"]["analytic_forward_matmul"] > 0
  assert r["flops"]["xla_train_step"] > 0 and r["achieved_flops_per_s"]["analytic"] > 0
  scans = report["scan_methods"]
  assert scans["cpu_kernel"] == r and "skipped" in scans["pallas"]  # CPU's auto method: not rerun.
  (s,) = report["torch_reference"]["settings"]
  assert s["train_tokens_per_s_ratio"] == pytest.approx(r["train_tokens_per_s"] / 10.0)
  assert not s["same_model_and_shape"]  # The small INN, not the reference's model.
  assert not any(x["met"] for x in s["targets"])


def test_tiny_run_markdown_has_every_table(tiny_run):
  md = (tiny_run / "bench_cpu.md").read_text()
  assert "| model | size | setting | params | batch x seq |" in md
  for section in ("| inn | small | auto (K=1), remat none |", "4 x 8 as 1 batch", "## FLOP/s",
                  "Matmul peak float32", "## INN scan methods", "| cpu_kernel | auto (K=1)",
                  "## Against the paper's PyTorch INN", "NOT like for like",
                  "INN form: paper"):
    assert section in md, section
  with pytest.raises(ValueError, match="--overwrite"):
    bench.main(["--out", str(tiny_run)])


def test_flop_ceiling_script(tmp_path, monkeypatch):
  """benchmarks/flop_ceiling.py: both variants timed on the same FLOPs; the scan is put back;
  an existing out file is refused."""
  import importlib.util
  from inn_jax.nn import mamba
  path = pathlib.Path(__file__).parents[1] / "benchmarks" / "flop_ceiling.py"
  spec = importlib.util.spec_from_file_location("flop_ceiling", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  scan = mamba.selective_scan
  _fast_compiles(monkeypatch)
  argv = ["--size", "small", "--seq", "8", "--repeats", "1", "--matmul_sizes", "64",
          "--out", str(tmp_path / "c.json")]
  report = module.main(argv)
  assert mamba.selective_scan is scan
  assert json.loads((tmp_path / "c.json").read_text())["inn"] == report["inn"]
  a, b = report["inn"], report["inn_without_scan"]
  assert a["flops"] == b["flops"] > 0 and (a["batch"], a["seq"]) == (1, 8)
  assert a["fraction_of_matmul_peak"] > 0 and b["fraction_of_matmul_peak"] > 0
  with pytest.raises(ValueError, match="--out .*c.json: exists; pass --overwrite"):
    module.main(argv)


def test_targets_flag_states_an_issues_own_targets():
  targets = bench.parse_targets("peak_memory_ratio<=1@K=1, train_tokens_per_s_ratio>=5@K=1,"
                                "goal:train_tokens_per_s_ratio>=7@auto")
  assert targets == (("peak_memory_ratio", "<=", 1.0, "target", "K=1"),
                     ("train_tokens_per_s_ratio", ">=", 5.0, "target", "K=1"),
                     ("train_tokens_per_s_ratio", ">=", 7.0, "goal", "auto"))
  rows = [_row(1, 1, "none", 90.0, 8.0), _row(0, 8, "none", 130.0, 3.6)]
  t = bench.torch_ratios({"models": rows, "matmul": {"float32": {"peak_flops_per_s": 100e9}}},
                         REF, targets)
  k1, auto = t["settings"]
  assert {m: (x["bound"], x["met"]) for (m, _), x in _targets(k1).items()} == {
      "peak_memory_ratio": ("<= 1.0", True), "train_tokens_per_s_ratio": (">= 5.0", False)}
  assert list(_targets(auto)) == [("train_tokens_per_s_ratio", "goal")]
  assert "target <= 1.0 | met |" in "\n".join(bench._torch_lines(t))
  for bad in ("peak_memory_ratio<1@K=1", "speed>=5@K=1", "peak_memory_ratio<=x@K=1",
              "peak_memory_ratio<=1@K=2", " , "):
    with pytest.raises(ValueError, match=r"^--targets "):
      bench.parse_targets(bad)
