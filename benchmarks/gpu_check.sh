#!/usr/bin/env bash
# The GPU check, in under 10 minutes on one GPU: the gpu-marked tests, every scan path
# (benchmarks/gpu_scan.py), and a 200-step run of the paper-code INN (configs/text8.py:inn_paper,
# bfloat16) through train.py on the offline pydoc corpus. Writes benchmarks/results/gpu/:
# gpu_check.json (each stage's command, exit status and seconds; the run's results.json keys),
# gpu_tests.xml and .log, gpu_scan.json, train_inn_paper_bf16.json and its metrics.jsonl.
#
#   bash benchmarks/gpu_check.sh                   # PYTHON=/path/to/python to choose one
#
# First, where wheels/gpu/ exists (scripts/fetch_gpu_wheels.sh makes it on a machine with PyPI,
# for a GPU machine without: carry wheels/ there), it installs those wheels, offline. Then it
# prints the versions of the packages that matter and the devices, and stops (exit 2) if a
# package requirements.txt names is missing.
# Without a GPU it says so and exits 3 before any GPU work. Exit 1: a stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then PYTHON=python; command -v python >/dev/null 2>&1 || PYTHON=python3; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The carried wheels (pure Python), before any other use of Python. Quiet when they are already
# installed: pip's output shows only when it installed something or failed.
wheels=wheels/gpu
if [ -d "$wheels" ]; then
  specs=()
  for whl in "$wheels"/*.whl; do
    [ -e "$whl" ] || continue
    f=${whl##*/}; rest=${f#*-}
    specs+=("${f%%-*}==${rest%%-*}")
  done
  if [ ${#specs[@]} -gt 0 ]; then
    if log=$("$PYTHON" -m pip install --no-index --find-links "$wheels" --no-cache-dir \
               --disable-pip-version-check --root-user-action=ignore "${specs[@]}" 2>&1); then
      grep '^Successfully installed' <<<"$log" | sed "s|^|gpu_check: from $wheels: |"
    else
      # Where $PYTHON's environment cannot be written: a folder of its own on PYTHONPATH.
      if "$PYTHON" -m pip install --quiet --no-index --no-deps --no-cache-dir \
           --disable-pip-version-check --target "$work/site" "$wheels"/*.whl >"$work/pip.log" 2>&1
      then
        export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
        echo "gpu_check: pip could not install into $PYTHON's environment:" \
             "$(tail -n 1 <<<"$log")" >&2
        echo "gpu_check: from $wheels into $work/site (PYTHONPATH): ${specs[*]}"
      else
        echo "$log" >&2
        cat "$work/pip.log" >&2
        echo "gpu_check: installing ${specs[*]} from $wheels failed (above)" >&2
      fi
    fi
  fi
fi

if ! device=$("$PYTHON" -c 'import jax
d = jax.devices()[0]
assert jax.default_backend() == "gpu", jax.default_backend()
print(f"{d.device_kind} ({jax.device_count()} devices, jax {jax.__version__})")' 2>/dev/null); then
  backend=$("$PYTHON" -c 'import jax; print(jax.default_backend())' 2>/dev/null || echo unknown)
  echo "gpu_check: no GPU: JAX's backend here is '$backend'. Run this on a machine with an" \
       "NVIDIA GPU and jax[cuda12] or jax[cuda13] installed (see README). Nothing was run." >&2
  exit 3
fi
echo "gpu_check: $device"

# The versions that matter (requirements.txt's packages and the CUDA plugin) and the devices; a
# package requirements.txt names that is missing stops the check here.
"$PYTHON" - <<'EOF' || exit 2
import importlib.metadata as md, re, sys
import jax

pins = dict(re.match(r"([A-Za-z0-9_.-]+)==(\S+)", line).groups()
            for line in open("requirements.txt") if re.match(r"[A-Za-z0-9_.-]+==", line))
plugins = sorted(d.metadata["Name"] for d in md.distributions()
                 if re.fullmatch(r"jax[-_]cuda\d+[-_](plugin|pjrt)", d.metadata["Name"] or ""))
missing = []
for name in [*pins, *plugins]:
  try:
    version = md.version(name)
  except md.PackageNotFoundError:
    version = "MISSING"
    missing.append(name)
  pin = f" (pinned {pins[name]})" if name in pins and pins[name] != version else ""
  print(f"gpu_check: {name} {version}{pin}")
if not plugins:
  print("gpu_check: no jax-cuda plugin package (a jax[cuda] install names one)")
print(f"gpu_check: devices {jax.devices()}")
if missing:
  sys.exit(f"gpu_check: missing {', '.join(missing)}: run `bash scripts/fetch_gpu_wheels.sh` on a "
           "machine with PyPI and carry wheels/ here (or pip install them); nothing was run.")
EOF

out=benchmarks/results/gpu
mkdir -p "$out"
# stage NAME SECONDS COMMAND...: runs COMMAND under a time limit, records its status and time.
stage() {
  local name=$1 limit=$2 start rc
  shift 2
  echo "gpu_check: $name: $*"
  start=$(date +%s.%N)
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  local command="$*"
  echo "$name|$rc|$start|$(date +%s.%N)|${command//$work/<tmp>}" >> "$work/stages"
  [ "$rc" -eq 124 ] && echo "gpu_check: $name: over its ${limit}s limit" >&2
  return 0
}

# The gpu-marked tests, verbose into gpu_tests.log, the Hopper default's kernel (Mosaic) first; a
# test still running after 100 s dumps every thread's stack there, so a hang shows where it is.
gpu_files=(tests/test_pallas_scan_mosaic.py)
gpu_files+=($(grep -l "pytest.mark.gpu" tests/test_*.py | grep -vx "${gpu_files[0]}"))
stage gpu_tests 150 "$PYTHON" -m pytest -m gpu -v -p no:cacheprovider -o faulthandler_timeout=100 \
    --durations=0 --junitxml="$out/gpu_tests.xml" "${gpu_files[@]}" \
    > >(tee "$out/gpu_tests.log") 2>&1
stage gpu_scan 200 "$PYTHON" benchmarks/gpu_scan.py --budget_s 140 --out "$out/gpu_scan.json"
stage train_inn_paper_bf16 230 "$PYTHON" train.py --config configs/text8.py:inn_paper \
    --workdir "$work/train" --config.data.name=pydoc --config.data.normalize=text8 \
    --config.model.dtype=bfloat16 --config.train.steps=200 --config.train.log_every=20 \
    --config.train.eval_every=200 --config.train.eval_windows=4 --config.train.save_every=200 \
    --config.eval.splits=valid --config.log.progress=false --config.log.tensorboard=false
if [ -f "$work/train/results.json" ]; then
  # The run's temporary workdir is written as <tmp>: committed results carry no absolute path.
  sed "s|$work|<tmp>|g" "$work/train/results.json" > "$out/train_inn_paper_bf16.json"
  cp "$work/train/metrics.jsonl" "$out/train_inn_paper_bf16.metrics.jsonl"
fi

"$PYTHON" - "$out" "$device" "$work/stages" <<'EOF'
import datetime, json, pathlib, sys

out, device, lines = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
stages = []
for line in lines.read_text().splitlines():
  name, rc, start, end, command = line.split("|", 4)
  stages.append({"stage": name, "exit_status": int(rc),
                 "seconds": round(float(end) - float(start), 1), "command": command})
train = out / "train_inn_paper_bf16.json"
results = json.loads(train.read_text()) if train.exists() else {}
summary = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "device": device,
           "command": "bash benchmarks/gpu_check.sh",
           "passed": len(stages) == 3 and all(s["exit_status"] == 0 for s in stages),
           "stages": stages,
           "train": {k: results.get(k) for k in ("scan_method", "valid_bpc", "tokens_per_s",
                                                 "train_time_s", "microbatches", "steps")}}
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
for s in stages:
  print(f"gpu_check: {s['stage']}: exit {s['exit_status']}, {s['seconds']}s")
print(f"gpu_check: {'passed' if summary['passed'] else 'FAILED'}; wrote {out}/gpu_check.json")
sys.exit(0 if summary["passed"] else 1)
EOF
