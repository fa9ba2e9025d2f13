#!/usr/bin/env bash
# The GPU check, in under 5 minutes on one H100 or H200: every gpu-marked test, each in its own
# process under its own time-out (GPU_TEST_TIMEOUT, 120 s), all at once; then every scan path
# against its floor and the two INN forms' training steps (benchmarks/gpu_scan.py, given what is
# left of DEADLINE_S, 260 s, less a margin). GPU_CHECK_TRAIN=1 adds a 200-step run of the
# paper-code INN (configs/text8.py:inn_paper, bfloat16) through train.py on the offline pydoc
# corpus (about 3 more minutes). Writes benchmarks/results/gpu/: gpu_check.json (each stage's
# command, exit status and seconds; each test's verdict and seconds; with the run, its
# results.json keys), gpu_tests/ (each test's log and JUnit XML), gpu_scan.json, and with the run
# train_inn_paper_bf16.json and its metrics.jsonl. Its log (stdout) says how long each stage took.
#
#   bash benchmarks/gpu_check.sh                   # PYTHON=/path/to/python to choose one
#
# First, where wheels/gpu/ exists (scripts/fetch_gpu_wheels.sh makes it on a machine with PyPI,
# for a GPU machine without: carry wheels/ there), it installs those wheels, offline. Then it
# prints the versions of the packages that matter and the devices, and stops (exit 2) if a
# package requirements.txt names is missing.
# Without a GPU it says so and exits 3 before any GPU work. Exit 1: a stage or a test failed.
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
began=$(date +%s.%N)
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # Several test processes share the GPU at once.
since() { "$PYTHON" -c "import sys, time; print(round(time.time() - float(sys.argv[1]), 1))" "$1"; }
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
  echo "gpu_check: $name: exit $rc after $(since "$start")s ($(since "$began")s in all)"
  return 0
}

# The gpu-marked tests: each in its own process under its own time-out, all at once (XLA
# compiles on the CPU cores, and the kernels' problems are small), so that a test that hangs
# costs its own time-out only and every other test still gets a verdict. Exit 0: all passed.
gpu_tests() {
  local id i=0 pids=()
  rm -rf "$out/gpu_tests" && mkdir -p "$out/gpu_tests"
  "$PYTHON" -m pytest -m gpu --collect-only -q -p no:cacheprovider \
      $(grep -l "pytest.mark.gpu" tests/test_*.py) 2>/dev/null | grep '::' > "$work/test_ids"
  while read -r id; do
    i=$((i + 1))
    (
      start=$(date +%s.%N)
      timeout --kill-after=5 "${GPU_TEST_TIMEOUT:-120}" "$PYTHON" -m pytest -m gpu -v \
          -p no:cacheprovider -o faulthandler_timeout=100 --junitxml="$out/gpu_tests/$i.xml" \
          "$id" > "$out/gpu_tests/$i.log" 2>&1
      echo "$i|$id|$?|$start|$(date +%s.%N)" > "$work/test.$i"
    ) &
    pids+=($!)
  done < "$work/test_ids"
  [ ${#pids[@]} -gt 0 ] || { echo "gpu_check: no gpu-marked test was collected" >&2; return 1; }
  wait "${pids[@]}"
  cat "$work"/test.* > "$work/tests"
  ! cut -d'|' -f3 "$work/tests" | grep -qvx 0
}
export -f gpu_tests
export out work PYTHON
stage gpu_tests 150 bash -c gpu_tests

# The benchmark gets what is left of the deadline, less a margin for its start and the summary.
left=$("$PYTHON" -c "import sys, time
print(max(30, int(float(sys.argv[2]) - (time.time() - float(sys.argv[1])) - 30)))" \
       "$began" "${DEADLINE_S:-260}")
stage gpu_scan $((left + 40)) "$PYTHON" benchmarks/gpu_scan.py --budget_s "$left" \
    --out "$out/gpu_scan.json"

if [ "${GPU_CHECK_TRAIN:-0}" = 1 ]; then
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
fi

"$PYTHON" - "$out" "$device" "$work" "$began" "${GPU_CHECK_TRAIN:-0}" <<'EOF'
import datetime, json, pathlib, sys, time
import xml.etree.ElementTree as ET

out, device, work = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
began, train = float(sys.argv[4]), sys.argv[5] == "1"
stages = []
for line in (work / "stages").read_text().splitlines():
  name, rc, start, end, command = line.split("|", 4)
  stages.append({"stage": name, "exit_status": int(rc),
                 "seconds": round(float(end) - float(start), 1), "command": command})
tests = []
lines = (work / "tests").read_text().splitlines() if (work / "tests").exists() else []
for line in sorted(lines, key=lambda l: int(l.split("|")[0])):
  i, test_id, rc, start, end = line.split("|")
  rc = int(rc)
  verdict = {0: "passed", 1: "failed", 124: "timed out", 137: "timed out"}.get(rc, "error")
  xml = out / "gpu_tests" / f"{i}.xml"
  if rc == 0 and xml.exists():  # A skipped test exits 0 too.
    if any(int(s.get("skipped", 0)) for s in ET.parse(xml).getroot().iter("testsuite")):
      verdict = "skipped"
  tests.append({"test": test_id, "verdict": verdict, "passed": verdict == "passed",
                "exit_status": rc, "seconds": round(float(end) - float(start), 1),
                "log": f"gpu_tests/{i}.log"})
run = out / "train_inn_paper_bf16.json"
results = json.loads(run.read_text()) if train and run.exists() else {}
summary = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "device": device,
           "command": ("GPU_CHECK_TRAIN=1 " if train else "") + "bash benchmarks/gpu_check.sh",
           "seconds": round(time.time() - began, 1),
           "passed": (len(stages) == 2 + train and all(s["exit_status"] == 0 for s in stages)
                      and bool(tests) and all(t["verdict"] in ("passed", "skipped")
                                              for t in tests)),
           "stages": stages, "tests": tests}
if train:
  summary["train"] = {k: results.get(k) for k in ("scan_method", "valid_bpc", "tokens_per_s",
                                                  "train_time_s", "microbatches", "steps")}
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
for t in tests:
  print(f"gpu_check: {t['test']}: {t['verdict']}, {t['seconds']}s")
for s in stages:
  print(f"gpu_check: {s['stage']}: exit {s['exit_status']}, {s['seconds']}s")
print(f"gpu_check: {'passed' if summary['passed'] else 'FAILED'} in {summary['seconds']}s; "
      f"wrote {out}/gpu_check.json")
sys.exit(0 if summary["passed"] else 1)
EOF
