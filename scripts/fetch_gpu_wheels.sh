#!/usr/bin/env bash
# The pure-Python wheels that the lent GPU machine (nvidia-h200: no network; jax 0.11.2 with the
# CUDA 13 plugin) lacks for this project, into wheels/gpu/ (git-ignored), at requirements.txt's
# pins. benchmarks/gpu_check.sh installs them there before anything else, when the folder travels:
#
#   bash scripts/fetch_gpu_wheels.sh         # here, with PyPI; PYTHON=/path/to/python to choose one
#   then the device tool's run with carry ["wheels"] and command "bash benchmarks/gpu_check.sh"
#
# Idempotent: keeps what is already there, removes wheels no longer wanted (two versions of one
# package stop pip's install), and fails if a wheel is not pure Python, if one needs a package
# that neither the GPU machine nor this list has, or if the folder grows past $MAX_MIB.
# tests/test_gpu_wheels.py checks that this list covers what inn_jax imports.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DEST=wheels/gpu
MAX_MIB=16   # the device tool carries 64 MiB in all, the working tree included

# What inn_jax imports that the GPU machine lacks, and what those need that it lacks (nothing:
# ml-collections needs absl-py and PyYAML, tensorboardX numpy, packaging and protobuf>=3.20, all
# there). NAME takes requirements.txt's pin; NAME==VERSION for one it does not pin.
GPU_WHEELS=(ml-collections tensorboardX)

# The distributions the GPU machine already has: /work/.library/device/KINDS.md, "Python packages
# already there", nvidia-h200 (read there on 2026-11-17), copied so that neither this script nor
# the test needs a file outside the repository (the test compares the two where KINDS.md exists).
GPU_HAS="
  absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
  botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
  coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython
  diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic
  frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
  hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib
  jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator
  lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py
  mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja
  numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
  nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver
  nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink
  nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless
  optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
  pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
  py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark
  pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml
  regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy
  seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
  sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
  threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq
  torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
  typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray
  xxhash yarl zipp
"

norm() { echo "$1" | tr 'A-Z_.' 'a-z--'; }

specs=()
for want in "${GPU_WHEELS[@]}"; do
  if [[ "$want" == *==* ]]; then specs+=("$want"); continue; fi
  pin=$(grep -iE "^$(norm "$want" | sed 's/-/[-_.]/g')==" requirements.txt || true)
  if [ -z "$pin" ]; then
    echo "fetch_gpu_wheels: requirements.txt pins no $want; name it as $want==VERSION here" >&2
    exit 2
  fi
  specs+=("$want==${pin#*==}")
done

mkdir -p "$DEST"
for spec in "${specs[@]}"; do
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      --python-version 3.12 --dest "$DEST" "$spec"
done

# Check what is there against the list, and print it.
"$PYTHON" - "$DEST" "$MAX_MIB" "$GPU_HAS" "${specs[@]}" <<'PY'
import pathlib, re, sys, zipfile
try:
  from packaging.requirements import Requirement
except ImportError:
  from pip._vendor.packaging.requirements import Requirement

dest, max_mib, has, specs = pathlib.Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4:]
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
wanted = {norm(s.split("==")[0]): s.split("==")[1] for s in specs}
have = {norm(n) for n in has.split()}
# The GPU machine's interpreter, for requirement markers.
env = dict(python_version="3.12", python_full_version="3.12.3", implementation_name="cpython",
           platform_python_implementation="CPython", os_name="posix", sys_platform="linux",
           platform_system="Linux", platform_machine="x86_64", extra="")
errors, kept = [], []
for whl in sorted(dest.glob("*.whl")):
  name, version = whl.name.split("-")[:2]
  if wanted.get(norm(name)) != version:
    whl.unlink()
    print(f"fetch_gpu_wheels: removed {whl.name} (not on the list)")
    continue
  if not whl.name.endswith("-none-any.whl"):
    errors.append(f"{whl.name} is not a pure-Python wheel")
  with zipfile.ZipFile(whl) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    needs = [Requirement(line.split(":", 1)[1].strip())
             for line in z.read(meta).decode().splitlines() if line.startswith("Requires-Dist:")]
  for r in needs:
    if r.marker is not None and not r.marker.evaluate(env):
      continue
    if norm(r.name) not in have and norm(r.name) not in wanted:
      errors.append(f"{whl.name} needs {r}, which neither the GPU machine nor the list has: "
                    "add it to GPU_WHEELS")
  kept.append(whl)
missing = sorted(set(wanted) - {norm(w.name.split("-")[0]) for w in kept})
errors += [f"{name}=={wanted[name]} was not downloaded" for name in missing]
total = sum(w.stat().st_size for w in kept)
for w in kept:
  print(f"fetch_gpu_wheels: {w.name} {w.stat().st_size / 1024:.0f} KiB")
print(f"fetch_gpu_wheels: {len(kept)} wheels, {total / 2**20:.2f} MiB in {dest}/")
if total > max_mib * 2**20:
  errors.append(f"{dest}/ holds {total / 2**20:.1f} MiB, over {max_mib:g} MiB")
for e in errors:
  print(f"fetch_gpu_wheels: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
echo "fetch_gpu_wheels: carry wheels/ to the GPU machine (the device tool's carry: [\"wheels\"]);" \
     "benchmarks/gpu_check.sh installs them there"
