"""Cross-check of `INNConfig.paper_code()` against the paper's official PyTorch INN.

  python benchmarks/official_crosscheck.py --both --torch_python $INN_TORCH_PYTHON \\
      --out benchmarks/results/official_crosscheck.json

Two halves, always in separate processes (torch and jax never share one):
  --torch  (a python that has torch; numpy too) builds the official model from --reference
           (default ../shared/reference_torch beside the repository, or $REFERENCE_TORCH_DIR:
           `ref_inn.py` and its CPU `mamba_ssm` shim) with torch.manual_seed(--seed), in eval
           mode (no dropout), runs one --batch x --length batch of tokens drawn by
           numpy.random.default_rng(--seed), and writes --npz: every parameter under its
           PyTorch name ("param/<name>"), the batch ("x", "y"), the logits, the mean
           cross-entropy and every gradient ("grad/<name>"), plus a JSON "meta" string. Plain
           arrays only: it loads with allow_pickle=False.
  --jax    (the default; this repository's python) loads --npz into `INN(INNConfig.paper_code(),
           27)` (every tensor mapped, transposed where PyTorch stores (out, in); the depthwise
           conv's (E, 1, W) as (W, E); an unmapped, missing or mis-shaped tensor is an error),
           runs the same batch forward and backward with float32 matmuls at HIGHEST precision,
           and writes --out (JSON): parameter counts, logits' max abs difference and max
           |logits|, both losses, each gradient's max abs difference over its max |gradient|
           and the worst, tensors mapped, versions, seed and batch shape.
  --both   runs the torch half with --torch_python (default $INN_TORCH_PYTHON: a python with
           torch, e.g. the venv benchmarks/torch_reference.sh makes) as a subprocess, then the
           jax half here.

Exit status: 0 when every threshold below holds, 1 when one fails, 2 when the reference or torch
is missing (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile

try:
  import numpy as np
except ImportError:  # The torch venv without numpy.
  print(f"official_crosscheck: numpy is not importable by {sys.executable}: pip install numpy",
        file=sys.stderr)
  sys.exit(2)

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VOCAB = 27                 # text8's characters: the paper's vocabulary.
EXPECTED_PARAMS = 4_219_163  # The official model at N=32, 6 layers, d_model 256, vocab 27.

# Thresholds. Both sides are float32 with exact (HIGHEST) matmuls, so they differ only by the
# order of float32 sums (a few ulps, eps = 1.2e-7, grown by 6 layers of scans and attention):
# seen 5.9e-7, 8.7e-8 and 3.0e-6 below. A real mismatch (a transposed or missing weight, a
# shifted conv, a different norm eps, dropout left on) moves all three by 1e-3 or more.
LOGITS_REL = 1e-5  # max |logits diff| / max |logits|.
LOSS_REL = 1e-6    # |loss diff| / |loss|: a mean over all tokens, so tighter than one logit.
GRAD_REL = 1e-5    # per tensor, max |grad diff| / max |grad|; backward sums more terms.


class MappingError(ValueError):
  """The .npz's tensors do not map one to one onto the model's parameters."""


def default_reference() -> pathlib.Path:
  """$REFERENCE_TORCH_DIR, else ../shared/reference_torch beside the repository (as
  benchmarks/torch_reference.sh)."""
  return pathlib.Path(os.environ.get("REFERENCE_TORCH_DIR", REPO.parent / "shared" /
                                     "reference_torch"))


def die(message: str, code: int = 2):
  print(f"official_crosscheck: {message}", file=sys.stderr)
  sys.exit(code)


# ------------------------------------------------------------------------------------------
# The torch half (imports torch, never jax).

def torch_half(reference: pathlib.Path, npz: pathlib.Path, seed: int, batch: int, length: int):
  if not (reference / "ref_inn.py").is_file():
    die(f"no ref_inn.py in {reference}: pass --reference or set REFERENCE_TORCH_DIR")
  try:
    import torch
  except ImportError:
    die(f"torch is not importable by {sys.executable}: run this half with a python that has "
        "torch (--torch_python, or $INN_TORCH_PYTHON)")
  sys.path.insert(0, str(reference))
  from ref_inn import RefINN

  torch.set_float32_matmul_precision("highest")
  torch.manual_seed(seed)
  model = RefINN(VOCAB).eval()  # eval: the attention's dropout (0.1) off.
  rng = np.random.default_rng(seed)
  x = rng.integers(0, VOCAB, (batch, length))
  y = rng.integers(0, VOCAB, (batch, length))
  logits = model(torch.tensor(x))
  loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), torch.tensor(y).reshape(-1))
  loss.backward()
  named = list(model.named_parameters())  # The tied head.weight appears once, as embedding.weight.
  out = {"x": x.astype(np.int32), "y": y.astype(np.int32),
         "logits": logits.detach().numpy(), "loss": np.float32(loss.item())}
  for name, p in named:
    out[f"param/{name}"] = p.detach().numpy()
    out[f"grad/{name}"] = p.grad.numpy()
  meta = {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
          "seed": seed, "batch_shape": [batch, length], "vocab": VOCAB,
          "params": sum(p.numel() for _, p in named), "tensors": len(named),
          "reference": str(reference.resolve()), "threads": torch.get_num_threads(),
          "shim_scan": os.environ.get("SHIM_SCAN", "chunked"),
          "device": str(next(model.parameters()).device)}
  out["meta"] = np.array(json.dumps(meta))  # A unicode array, not an object: no pickle.
  npz.parent.mkdir(parents=True, exist_ok=True)
  np.savez(npz, **out)
  print(f"torch half: {meta['tensors']} tensors, {meta['params']:,} parameters, "
        f"loss {loss.item():.6f} -> {npz}", file=sys.stderr)


# ------------------------------------------------------------------------------------------
# The weight mapping (numpy only, so that it can be tested without torch).

class Transform:
  """How one PyTorch tensor becomes ours (`to_ours`) and back (`to_torch`)."""

  def __init__(self, name, to_ours, to_torch):
    self.name, self.to_ours, self.to_torch = name, to_ours, to_torch

  def __repr__(self):
    return self.name


SAME = Transform("as is", lambda a: a, lambda a: a)
TRANSPOSE = Transform("transposed", lambda a: a.T, lambda a: a.T)  # Linear's (out, in) -> (in, out).
# Depthwise Conv1d's (E, 1, W) -> ours (W, E).
CONV = Transform("conv (E,1,W)->(W,E)", lambda a: a[:, 0, :].T, lambda a: a.T[:, None, :])

# Ours, inside layers[k] -> (the official name inside layers.k, transform). The official layer
# is a ModuleList [Mamba, MultiheadAttention, LayerNorm (before Mamba), LayerNorm (before
# attention)].
LAYER_MAP = {
    "memory/A_log_ES": ("0.A_log", SAME), "memory/D_E": ("0.D", SAME),
    "memory/in_proj/kernel": ("0.in_proj.weight", TRANSPOSE),
    "memory/conv_WE": ("0.conv1d.weight", CONV), "memory/conv_bias_E": ("0.conv1d.bias", SAME),
    "memory/x_proj/kernel": ("0.x_proj.weight", TRANSPOSE),
    "memory/dt_proj/kernel": ("0.dt_proj.weight", TRANSPOSE),
    "memory/dt_bias_E": ("0.dt_proj.bias", SAME),
    "memory/out_proj/kernel": ("0.out_proj.weight", TRANSPOSE),
    "comm/in_proj/kernel": ("1.in_proj_weight", TRANSPOSE),  # q, k, v stacked on both sides.
    "comm/in_proj/bias": ("1.in_proj_bias", SAME),
    "comm/out_proj/kernel": ("1.out_proj.weight", TRANSPOSE),
    "comm/out_proj/bias": ("1.out_proj.bias", SAME),
    "memory_norm/scale": ("2.weight", SAME), "memory_norm/bias": ("2.bias", SAME),
    "comm_norm/scale": ("3.weight", SAME), "comm_norm/bias": ("3.bias", SAME)}
# Ours at the top -> the official name. The head is tied to the embedding on both sides; its
# bias is ours embed/bias_V.
TOP_MAP = {"embed/table_VD": ("embedding.weight", SAME), "embed/bias_V": ("head.bias", SAME),
           "final_norm/scale": ("norm_f.weight", SAME), "final_norm/bias": ("norm_f.bias", SAME)}


def _keys(path) -> list[str]:
  keys = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        keys.append(str(getattr(k, attr)))
        break
    else:
      keys.append(str(k))
  return [k for k in keys if k != "value"]  # nnx.Param's own leaf.


def official_name(path) -> tuple[str, Transform]:
  """(the official PyTorch name, transform) of one of our parameters' tree paths."""
  keys = _keys(path)
  ours = "/".join(keys)
  if keys[0] == "layers" and len(keys) > 2 and "/".join(keys[2:]) in LAYER_MAP:
    name, transform = LAYER_MAP["/".join(keys[2:])]
    return f"layers.{keys[1]}.{name}", transform
  if ours in TOP_MAP:
    return TOP_MAP[ours]
  raise MappingError(f"our parameter {ours} has no official counterpart in the mapping")


def mapping(model) -> list[tuple[object, str, Transform, tuple, np.dtype]]:
  """Per parameter of `model`, in tree order: (path, official name, transform, our shape,
  our dtype). Every parameter must map, and no two onto one official name."""
  import jax
  from flax import nnx
  flat = jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]
  rows, seen = [], {}
  for path, x in flat:
    name, transform = official_name(path)
    if name in seen:
      raise MappingError(f"{'/'.join(_keys(path))} and {seen[name]} both map to {name}")
    seen[name] = "/".join(_keys(path))
    rows.append((path, name, transform, tuple(x.shape), np.dtype(x.dtype)))
  return rows


def to_official(model, prefix: str = "param/", tree=None) -> dict[str, np.ndarray]:
  """`model`'s parameters (or `tree`, a state of the same structure: e.g. gradients) under the
  official names, in PyTorch's layouts: the inverse of `load_official`."""
  import jax
  from flax import nnx
  state = nnx.state(model, nnx.Param) if tree is None else tree
  leaves = jax.tree_util.tree_leaves(state)
  return {prefix + name: np.asarray(t.to_torch(np.asarray(leaf)))
          for (_, name, t, _, _), leaf in zip(mapping(model), leaves)}


def official_arrays(arrays, model, prefix: str) -> list[np.ndarray]:
  """The tensors `arrays[prefix + name]` in our layouts, in `model`'s tree order. Raises
  MappingError on a tensor missing, left over (under `prefix`) or of the wrong shape."""
  rows = mapping(model)
  present = {k for k in arrays.keys() if k.startswith(prefix)}
  wanted = {prefix + name for _, name, _, _, _ in rows}
  if missing := sorted(wanted - present):
    raise MappingError(f"{len(missing)} of {len(wanted)} tensors missing from the .npz: "
                       f"{', '.join(missing[:5])}")
  if extra := sorted(present - wanted):
    raise MappingError(f"{len(extra)} .npz tensors map to none of ours: {', '.join(extra[:5])}")
  out = []
  for path, name, transform, shape, dtype in rows:
    a = np.asarray(arrays[prefix + name])
    torch_shape = transform.to_torch(np.empty(shape, np.int8)).shape
    if a.shape != torch_shape:
      raise MappingError(f"{prefix}{name} has shape {a.shape}; {'/'.join(_keys(path))} "
                         f"{shape} needs {torch_shape} ({transform})")
    out.append(np.ascontiguousarray(transform.to_ours(a)).astype(dtype))
  return out


def load_official(model, arrays) -> int:
  """Sets `model`'s parameters from `arrays` ("param/<official name>"); returns how many."""
  import jax
  import jax.numpy as jnp
  from flax import nnx
  state = nnx.state(model, nnx.Param)
  treedef = jax.tree_util.tree_structure(state)
  values = official_arrays(arrays, model, "param/")
  nnx.update(model, jax.tree_util.tree_unflatten(treedef, [jnp.asarray(v) for v in values]))
  return len(values)


# ------------------------------------------------------------------------------------------
# The jax half.

def jax_half(npz: pathlib.Path, out: pathlib.Path | None, command: str | None = None) -> dict:
  import flax
  import jax
  import jax.numpy as jnp
  import optax
  from flax import nnx

  from inn_jax.models import INN, INNConfig, count_params

  with np.load(npz, allow_pickle=False) as f:
    arrays = {k: f[k] for k in f.files}
  meta = json.loads(str(arrays.pop("meta")))
  model = INN(INNConfig.paper_code(), VOCAB, rngs=nnx.Rngs(params=meta["seed"], dropout=1))
  model.eval()
  mapped = load_official(model, arrays)
  rows = mapping(model)
  x, y = jnp.asarray(arrays["x"]), jnp.asarray(arrays["y"])

  def loss_fn(m):
    logits = m(x, deterministic=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

  with jax.default_matmul_precision("highest"):
    (loss, logits), grads = nnx.jit(nnx.value_and_grad(loss_fn, has_aux=True))(model)
  grad_state = nnx.state(grads, nnx.Param)
  if (jax.tree_util.tree_structure(grad_state)
      != jax.tree_util.tree_structure(nnx.state(model, nnx.Param))):
    raise MappingError("the gradients' tree is not the parameters' tree")
  grad_leaves = jax.tree_util.tree_leaves(grad_state)
  ref_grads = official_arrays(arrays, model, "grad/")

  logits, ref_logits = np.asarray(logits, np.float64), arrays["logits"].astype(np.float64)
  if logits.shape != ref_logits.shape:
    raise MappingError(f"logits {logits.shape} against the reference's {ref_logits.shape}")
  logits_diff = float(np.abs(logits - ref_logits).max())
  logits_max = float(np.abs(ref_logits).max())
  loss, ref_loss = float(loss), float(arrays["loss"])
  per_tensor = {}
  for (_, name, _, _, _), g, want in zip(rows, grad_leaves, ref_grads):
    want = want.astype(np.float64)
    scale = float(np.abs(want).max())
    diff = float(np.abs(np.asarray(g, np.float64) - want).max())
    per_tensor[name] = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
  worst = max(per_tensor, key=per_tensor.get)
  result = {
      "command": command or f"python benchmarks/official_crosscheck.py --jax --npz {npz}",
      "what": "INNConfig.paper_code() loaded with the official PyTorch INN's weights, one batch "
              "forward and backward, float32 at HIGHEST matmul precision, both in eval mode",
      # Relative to the repository: a committed result names no machine's paths.
      "reference": os.path.relpath(meta["reference"], REPO),
      "seed": meta["seed"], "batch_shape": meta["batch_shape"], "vocab": VOCAB,
      "params": {"torch": meta["params"], "jax": count_params(model),
                 "expected": EXPECTED_PARAMS},
      "tensors": {"torch": meta["tensors"], "mapped": mapped},
      "logits": {"max_abs_diff": logits_diff, "max_abs": logits_max,
                 "rel": logits_diff / logits_max},
      "loss": {"torch": ref_loss, "jax": loss, "abs_diff": abs(loss - ref_loss),
               "rel": abs(loss - ref_loss) / abs(ref_loss)},
      "grads": {"worst_rel": per_tensor[worst], "worst_tensor": worst,
                "per_tensor_rel": per_tensor},
      "thresholds": {"logits_rel": LOGITS_REL, "loss_rel": LOSS_REL, "grad_rel": GRAD_REL},
      "versions": {"torch": meta["torch"], "jax": jax.__version__, "flax": flax.__version__,
                   "numpy": np.__version__, "python_jax": platform.python_version(),
                   "python_torch": meta["python"]},
      "jax_backend": jax.default_backend(), "torch_device": meta["device"],
      "torch_threads": meta["threads"],
      "torch_scan": meta["shim_scan"],
  }
  checks = {
      "params": meta["params"] == count_params(model) == EXPECTED_PARAMS,
      "all_tensors_mapped": mapped == meta["tensors"] == len(rows),
      "logits": result["logits"]["rel"] <= LOGITS_REL,
      "loss": result["loss"]["rel"] <= LOSS_REL,
      "grads": result["grads"]["worst_rel"] <= GRAD_REL}
  result["checks"] = checks
  result["ok"] = all(checks.values())
  if out is not None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
  failed = [k for k, v in checks.items() if not v]
  print(f"params {result['params']['torch']:,} / {result['params']['jax']:,}; "
        f"{mapped} tensors mapped; logits max abs diff {logits_diff:.3g} at max |logits| "
        f"{logits_max:.4g} (rel {result['logits']['rel']:.2g}); loss {loss:.6f} vs "
        f"{ref_loss:.6f} (rel {result['loss']['rel']:.2g}); grads worst rel "
        f"{per_tensor[worst]:.2g} ({worst}); " + ("ok" if not failed else "FAILED: " +
                                                  ", ".join(failed))
        + (f" -> {out}" if out else ""))
  return result


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  mode = p.add_mutually_exclusive_group()
  mode.add_argument("--torch", action="store_true", help="the torch half: write --npz")
  mode.add_argument("--jax", action="store_true", help="the jax half (default): read --npz")
  mode.add_argument("--both", action="store_true", help="torch half via --torch_python, then jax")
  p.add_argument("--reference", type=pathlib.Path, default=default_reference(),
                 help="the folder with ref_inn.py (default: %(default)s)")
  p.add_argument("--torch_python", default=os.environ.get("INN_TORCH_PYTHON"),
                 help="--both: a python with torch and numpy (default: $INN_TORCH_PYTHON)")
  p.add_argument("--npz", type=pathlib.Path, default=None,
                 help="the torch half's arrays (--both: kept only if given)")
  p.add_argument("--out", type=pathlib.Path, default=None, help="the jax half's JSON")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--length", type=int, default=24)
  a = p.parse_args(argv)

  if a.torch:
    torch_half(a.reference, a.npz or pathlib.Path("official_crosscheck_ref.npz"), a.seed,
               a.batch, a.length)
    return 0
  if not a.both:
    if a.npz is None or not a.npz.is_file():
      die(f"--jax needs --npz, the torch half's file (got {a.npz})")
    return 0 if jax_half(a.npz, a.out)["ok"] else 1

  if not (a.reference / "ref_inn.py").is_file():
    die(f"no ref_inn.py in {a.reference}: pass --reference or set REFERENCE_TORCH_DIR")
  if not a.torch_python:
    die("--torch_python: not given and INN_TORCH_PYTHON is not set; pass a python with torch "
        "(benchmarks/torch_reference.sh makes one)")
  if not (os.path.isfile(a.torch_python) and os.access(a.torch_python, os.X_OK)):
    die(f"no python at {a.torch_python}: pass --torch_python or set INN_TORCH_PYTHON to a "
        "python with torch")
  with tempfile.TemporaryDirectory() as tmp:
    npz = a.npz or pathlib.Path(tmp) / "official_ref.npz"
    run = subprocess.run([a.torch_python, __file__, "--torch", "--reference", str(a.reference),
                          "--npz", str(npz), "--seed", str(a.seed), "--batch", str(a.batch),
                          "--length", str(a.length)], stderr=subprocess.PIPE, text=True)
    sys.stderr.write(run.stderr)
    if run.returncode == 2:
      sys.exit(2)  # Its one line (no torch, no reference) is above.
    if run.returncode:
      die(f"the torch half failed (exit {run.returncode})", 1)
    return 0 if jax_half(npz, a.out, command(a))["ok"] else 1


def command(a) -> str:
  """The --both command line that made the JSON, with paths as given."""
  # The interpreter is this machine's: the line names it by the variable the tests read.
  line = ["python benchmarks/official_crosscheck.py --both", "--torch_python $INN_TORCH_PYTHON"]
  if a.reference != default_reference():
    line.append(f"--reference {os.path.relpath(a.reference, REPO)}")
  line += [f"--{k} {getattr(a, k)}" for k in ("seed", "batch", "length")
           if getattr(a, k) != {"seed": 0, "batch": 2, "length": 24}[k]]
  if a.out is not None:
    line.append(f"--out {a.out}")
  return " ".join(line)


if __name__ == "__main__":
  try:
    sys.exit(main())
  except MappingError as e:  # The .npz and our model disagree: a failed check, said in one line.
    die(f"mapping: {e}", 1)
