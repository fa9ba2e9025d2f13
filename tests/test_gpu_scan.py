"""benchmarks/gpu_scan.py: its floors against hand-computed ones and its device table; what it
measures (both INN forms, the default form's narrow memories) and how it splits its budget. The
benchmark itself runs on a GPU (`bash benchmarks/gpu_check.sh`), not in the suite."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def bench():
  spec = importlib.util.spec_from_file_location("gpu_scan", REPO / "benchmarks" / "gpu_scan.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("kind,name", [("NVIDIA H200", "H200"), ("NVIDIA H100 80GB HBM3", "H100"),
                                       ("NVIDIA H100 PCIe", "H100-PCIe"),
                                       ("NVIDIA A100-SXM4-80GB", "A100"),
                                       ("NVIDIA A100-SXM4-40GB", "A100-SXM4-40GB")])
def test_device_table_picks_the_most_specific_entry(kind, name):
  assert bench().device_table(kind)["name"] == name


def test_unknown_device_has_no_floor():
  b = bench()
  assert b.device_table("cpu") is None
  assert b.floors(1e9, 1e9, None)["floor_s"] is None


def test_paper_shape_floors_on_an_h200():
  """The paper code's memory (512 rows, L 256, E 512, S 16, bf16 inputs, float32 parameters):
  bytes and exps counted by hand. Forward: u, delta, z, y (512 x 256 x 512 x 2 B each), B, C
  (512 x 256 x 16 x 2 B each), A (512 x 16 x 4 B), D and bias (512 x 4 B each); one exp per
  state element: 512 x 256 x 512 x 16."""
  b = bench()
  args = b.scan_inputs(*b.SHAPES["paper_L256"], jnp.bfloat16, jax.random.key(0))
  args = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), args)
  ble, bls = 512 * 256 * 512 * 2, 512 * 256 * 16 * 2
  forward = 4 * ble + 2 * bls + 512 * 16 * 4 + 2 * 512 * 4
  assert b.nbytes(args) + ble == forward == 545_296_384
  exps = 512 * 256 * 512 * 16
  h200 = b.device_table("NVIDIA H200")
  f = b.floors(forward, exps, h200)
  assert f["hbm_floor_s"] == pytest.approx(forward / 4.8e12)                 # 0.114 ms
  assert f["exp_floor_s"] == pytest.approx(exps / (16 * 132 * 1.98e9))       # 0.257 ms
  assert f["floor_s"] == f["exp_floor_s"] == pytest.approx(2.57e-4, rel=1e-2)
  both = b.floors(forward + 2 * (forward - ble) + ble, 2 * exps, h200)       # 0.313 / 0.514 ms
  assert both["floor_s"] == pytest.approx(5.14e-4, rel=1e-2)


def test_it_measures_both_forms_and_the_narrow_memories():
  b = bench()
  rows, neurons, length, width, state = b.SHAPES["default_form_L256"]
  assert (rows * neurons, width) == (16 * 32, 2 * 256 // 32)  # Batch 16, 32 neurons of 16.
  assert b.SHAPES["paper_L256"] == (16 * 32, 1, 256, 512, 16)
  assert {form for form, _ in b.TRAIN_ITEMS} == {"paper_form", "default_form"}
  assert ("default_form", "pallas") in b.TRAIN_ITEMS and ("default_form",
                                                          "associative") in b.TRAIN_ITEMS
  assert b.SHAPES["paper_L2048"][2] == 2048 and set(b.SECTIONS) == {
      "scan", "inn_train_step", "long", "pallas_variants"}
  assert sum(b.SECTIONS.values()) == pytest.approx(1.0)


def test_saved_states_count_the_padded_mosaic_width():
  b = bench()
  shape = b.SHAPES["default_form_L256"]
  triton = b.saved_state_bytes("pallas_triton", shape)
  mosaic = b.saved_state_bytes("pallas_mosaic", shape)
  assert triton == 2 * 16 * 32 * (256 // 16) * 16 * 16 * 4
  assert mosaic == 2 * 16 * 32 * (256 // 8) * 128 * 16 * 4  # Chunk 8, 16 channels padded to 128.
  assert b.saved_state_bytes("associative", shape) is None
