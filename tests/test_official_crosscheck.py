"""benchmarks/official_crosscheck.py: the paper-code INN against the paper's official PyTorch INN.

The fast tests cover the jax half's weight mapping (no torch needed): a round trip through the
official names and layouts, and the refusals (a tensor missing, left over, mis-shaped, or one of
ours with no official counterpart). The slow test runs both halves, and needs a python with
torch ($INN_TORCH_PYTHON) and the reference (../shared/reference_torch or $REFERENCE_TORCH_DIR).
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from inn_jax.models import INN, INNConfig

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "official_crosscheck.py"


def crosscheck():
  spec = importlib.util.spec_from_file_location("official_crosscheck", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def tiny(seed, **changes):
  config = INNConfig.paper_code(d_model=16, n_layers=2, n_neurons=2, **changes)
  return INN(config, 27, rngs=nnx.Rngs(params=seed, dropout=1))


def params(model):
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def test_mapping_round_trips_through_the_official_layouts():
  cc = crosscheck()
  source, target = tiny(0), tiny(1)
  arrays = cc.to_official(source)
  # 2 per-model norms + embedding + head bias, and 17 tensors per layer, as the official model.
  assert len(arrays) == 4 + 17 * 2
  assert arrays["param/layers.0.0.conv1d.weight"].shape == (32, 1, 4)  # (E, 1, W)
  assert arrays["param/layers.1.1.in_proj_weight"].shape == (48, 16)    # (3D, D): (out, in)
  assert arrays["param/embedding.weight"].shape == (27, 16)
  assert cc.load_official(target, arrays) == len(arrays)
  for a, b in zip(params(source), params(target)):
    np.testing.assert_array_equal(a, b)


def test_mapping_refuses_missing_extra_and_misshaped_tensors():
  cc = crosscheck()
  model = tiny(0)
  good = cc.to_official(model)

  missing = dict(good)
  del missing["param/layers.1.0.dt_proj.bias"]
  with pytest.raises(cc.MappingError, match="missing.*layers.1.0.dt_proj.bias"):
    cc.load_official(model, missing)

  extra = dict(good, **{"param/head.weight": good["param/embedding.weight"]})
  with pytest.raises(cc.MappingError, match="head.weight"):
    cc.load_official(model, extra)

  conv = dict(good)  # The conv weight without its middle axis: (E, W), not (E, 1, W).
  conv["param/layers.0.0.conv1d.weight"] = good["param/layers.0.0.conv1d.weight"][:, 0, :]
  with pytest.raises(cc.MappingError, match=r"conv1d.weight has shape \(32, 4\)"):
    cc.load_official(model, conv)

  square = dict(good)  # Stored (in, out) instead of PyTorch's (out, in).
  square["param/layers.0.0.x_proj.weight"] = good["param/layers.0.0.x_proj.weight"].T
  with pytest.raises(cc.MappingError, match="x_proj.weight has shape"):
    cc.load_official(model, square)

  grads = {k.replace("param/", "grad/"): v for k, v in good.items()}
  del grads["grad/norm_f.bias"]
  with pytest.raises(cc.MappingError, match="grad/norm_f.bias"):
    cc.official_arrays(grads, model, "grad/")


def test_mapping_refuses_a_parameter_with_no_official_counterpart():
  cc = crosscheck()
  with pytest.raises(cc.MappingError, match="neuron_embed_ND has no official counterpart"):
    cc.to_official(tiny(0, neuron_identity="embedding"))


def test_paper_code_maps_onto_the_official_parameter_count():
  cc = crosscheck()
  model = nnx.eval_shape(lambda: INN(INNConfig.paper_code(), 27, rngs=nnx.Rngs(0)))
  rows = cc.mapping(model)  # Shapes only: no weights drawn.
  shapes = {name: t.to_torch(np.empty(shape, np.int8)).shape for _, name, t, shape, _ in rows}
  assert len(shapes) == 106
  assert sum(np.prod(s) for s in shapes.values()) == cc.EXPECTED_PARAMS == 4_219_163
  assert shapes["layers.5.0.conv1d.weight"] == (512, 1, 4)
  assert shapes["layers.5.0.in_proj.weight"] == (1024, 256)
  assert shapes["layers.5.1.in_proj_weight"] == (768, 256)


def test_missing_reference_or_torch_exits_2_with_one_line(tmp_path):
  proc = subprocess.run([sys.executable, str(SCRIPT), "--both", "--reference", str(tmp_path)],
                        capture_output=True, text=True, timeout=60)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      f"official_crosscheck: no ref_inn.py in {tmp_path}: pass --reference or set "
      "REFERENCE_TORCH_DIR"]
  (tmp_path / "ref_inn.py").write_text("")
  proc = subprocess.run([sys.executable, str(SCRIPT), "--both", "--reference", str(tmp_path),
                         "--torch_python", str(tmp_path / "python")],
                        capture_output=True, text=True, timeout=60)
  assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
  assert "no python at" in proc.stderr
  env = {k: v for k, v in os.environ.items() if k != "INN_TORCH_PYTHON"}
  proc = subprocess.run([sys.executable, str(SCRIPT), "--both", "--reference", str(tmp_path)],
                        capture_output=True, text=True, timeout=60, env=env)
  assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
  assert "--torch_python: not given and INN_TORCH_PYTHON is not set" in proc.stderr


def torch_python():
  """$INN_TORCH_PYTHON if it imports torch and numpy, else None."""
  python = os.environ.get("INN_TORCH_PYTHON")
  if not python:
    return None
  try:
    ok = subprocess.run([python, "-c", "import torch, numpy"], capture_output=True,
                        timeout=120).returncode == 0
  except (OSError, subprocess.TimeoutExpired):
    return None
  return python if ok else None


@pytest.mark.slow
def test_paper_code_matches_the_official_model(tmp_path):
  reference = pathlib.Path(os.environ.get("REFERENCE_TORCH_DIR",
                                          REPO.parent / "shared" / "reference_torch"))
  if not (reference / "ref_inn.py").is_file():
    pytest.skip(f"no official reference at {reference} (set REFERENCE_TORCH_DIR)")
  python = torch_python()
  if python is None:
    pytest.skip("no python with torch: set INN_TORCH_PYTHON (a venv with torch, as "
                "benchmarks/torch_reference.sh makes)")
  out = tmp_path / "crosscheck.json"
  proc = subprocess.run([sys.executable, str(SCRIPT), "--both", "--torch_python", python,
                         "--reference", str(reference), "--out", str(out)],
                        capture_output=True, text=True, timeout=1200)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  r = json.loads(out.read_text())
  assert r["ok"] and all(r["checks"].values())
  assert r["params"]["torch"] == r["params"]["jax"] == 4_219_163
  assert r["tensors"]["torch"] == r["tensors"]["mapped"] == 106
  assert r["logits"]["rel"] <= 1e-5 and r["loss"]["rel"] <= 1e-6
  assert r["grads"]["worst_rel"] <= 1e-5 and len(r["grads"]["per_tensor_rel"]) == 106
  assert r["batch_shape"] == [2, 24] and r["seed"] == 0
