"""The lent GPU machine has no network: benchmarks/gpu_check.sh installs the wheels that
scripts/fetch_gpu_wheels.sh put into wheels/gpu/ before it first runs Python for anything else,
and that script's list covers every third-party package our code imports that the GPU machine
lacks. No network, no GPU; each check is also shown failing on a broken input."""

import ast
import importlib.metadata
import pathlib
import re
import sys
import zipfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
GPU_CHECK = REPO / "benchmarks" / "gpu_check.sh"
FETCH = REPO / "scripts" / "fetch_gpu_wheels.sh"
KINDS = pathlib.Path("/work/.library/device/KINDS.md")  # This workplace's; absent elsewhere.
# What gpu_check.sh runs: the package, train.py, gpu_scan.py and the test modules pytest collects.
SOURCES = [REPO / "inn_jax", REPO / "train.py", REPO / "benchmarks" / "gpu_scan.py",
           REPO / "tests"]
LOCAL = {"inn_jax", "train", "tests", "benchmarks"}


def norm(name: str) -> str:
  return re.sub(r"[-_.]+", "-", name).lower()


# --- gpu_check.sh installs first ----------------------------------------------------------------

def python_uses(script: str) -> list[tuple[int, str]]:
  """(line number, line) of each line that runs Python: "$PYTHON" ... or python/python3 -c/-m;
  a line continued with a backslash counts as one, with the number of its first."""
  uses = []
  lines = script.splitlines()
  for i, line in enumerate(lines, 1):
    if i > 1 and lines[i - 2].endswith("\\"):
      continue
    j = i
    while line.endswith("\\") and j < len(lines):
      line = line[:-1] + " " + lines[j].strip()
      j += 1
    code = re.sub(r"(^|\s)#.*", "", line)  # Not ${#array[@]}.
    if re.search(r'"\$\{?PYTHON\}?"\s|(^|[\s;(|&])python3?(\.\d+)?\s+-[cm]\b', code):
      uses.append((i, line.strip()))
  return uses


def install_problems(script: str) -> list[str]:
  """What is wrong with how `script` installs wheels/gpu/ (empty: nothing)."""
  uses = python_uses(script)
  if not uses:
    return ["the script never runs Python"]
  first_no, first = uses[0]
  problems = []
  if not re.search(r"-m pip install\b", first):
    problems.append(f"its first use of Python (line {first_no}) is not a pip install: {first}")
    return problems
  if "--no-index" not in first:
    problems.append(f"line {first_no} installs without --no-index (the GPU machine is offline)")
  links = re.search(r'--find-links[= ]\s*"?(\$\{?(\w+)\}?|[^\s"]+)', first)
  if not links:
    problems.append(f"line {first_no} installs without --find-links")
    return problems
  folder = links.group(1)
  if links.group(2):  # A variable: its assignment.
    assigned = re.search(rf"^\s*{links.group(2)}=(\S+)\s*$", script, re.M)
    folder = assigned.group(1).strip("\"'") if assigned else folder
  if folder.rstrip("/") != "wheels/gpu":
    problems.append(f"line {first_no} installs from {folder}, not wheels/gpu")
  # Only where the folder exists, so that a machine that has the packages needs none.
  before = "\n".join(script.splitlines()[:first_no])
  if not re.search(r'if \[ -d "?(wheels/gpu|\$\{?' + (links.group(2) or "_none_") + r'\}?)"? \]',
                   before):
    problems.append("the install does not depend on the wheels folder existing")
  return problems


def test_gpu_check_installs_the_wheels_before_it_first_runs_python():
  script = GPU_CHECK.read_text()
  assert install_problems(script) == []
  # And stops with one line naming a missing package, before any stage.
  assert re.search(r"missing .*fetch_gpu_wheels\.sh.*carry wheels/", script, re.S)
  assert script.index("fetch_gpu_wheels.sh` on a") < script.index("stage gpu_tests")


def test_the_install_check_fails_on_a_script_that_runs_python_first():
  script = GPU_CHECK.read_text()
  lines = script.splitlines()
  early = lines.index('wheels=wheels/gpu')
  broken = "\n".join(lines[:early] + ['"$PYTHON" -c "import jax"'] + lines[early:])
  assert any("not a pip install" in p for p in install_problems(broken))
  assert install_problems(script.replace("--no-index ", "")) != []
  assert install_problems(script.replace("wheels=wheels/gpu", "wheels=wheels/cpu")) != []
  assert install_problems('python -c "import jax"\n') != []


# --- the fetch list covers our imports ----------------------------------------------------------

def fetch_lists(text: str) -> tuple[set[str], set[str]]:
  """(the GPU machine's distributions, the fetched ones), normalized, from fetch_gpu_wheels.sh."""
  has = re.search(r'^GPU_HAS="([^"]*)"', text, re.M)
  wheels = re.search(r"^GPU_WHEELS=\(([^)]*)\)", text, re.M)
  assert has and wheels, "fetch_gpu_wheels.sh has no GPU_HAS=\"...\" or GPU_WHEELS=(...)"
  return ({norm(n) for n in has.group(1).split()},
          {norm(n.split("==")[0]) for n in wheels.group(1).split()})


def pinned(path: pathlib.Path) -> set[str]:
  names = set()
  for line in path.read_text().splitlines():
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9_.-]*)", line.split("#", 1)[0])
    if match:
      names.add(norm(match.group(1)))
  return names


def module_of(path: pathlib.Path) -> str:
  parts = list(path.relative_to(REPO).with_suffix("").parts)
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _catches_import_error(node: ast.Try) -> bool:
  names = []
  for handler in node.handlers:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    names += [k.id for k in kinds if isinstance(k, ast.Name)]
  return bool({"ImportError", "ModuleNotFoundError"} & set(names))


def scan(path: pathlib.Path) -> dict:
  """One file's imports: "third": [(top-level module, at module level)] outside the standard
  library and this repository, leaving out those in a try that catches ImportError; "local": the
  modules of this repository it imports at module level; "skips": what it importorskips."""
  tree = ast.parse(path.read_text(), str(path))
  in_function, guarded = set(), set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
      in_function.update(id(n) for n in ast.walk(node) if n is not node)
    if isinstance(node, ast.Try) and _catches_import_error(node):
      guarded.update(id(n) for part in node.body for n in ast.walk(part))
  out = {"third": [], "local": set(), "skips": set()}
  for node in ast.walk(tree):
    level = id(node) not in in_function
    if (isinstance(node, ast.Call) and level and isinstance(node.func, ast.Attribute)
        and node.func.attr == "importorskip" and node.args
        and isinstance(node.args[0], ast.Constant)):
      out["skips"].add(node.args[0].value)
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    else:
      continue
    for name in names:
      top = name.split(".")[0]
      if top in LOCAL:
        if level:
          out["local"].add(name)
      elif top not in sys.stdlib_module_names and id(node) not in guarded:
        out["third"].append((top, level))
  return out


def scan_all() -> dict[pathlib.Path, dict]:
  files = [p for s in SOURCES for p in ([s] if s.is_file() else sorted(s.rglob("*.py")))]
  assert len(files) > 20
  return {path.relative_to(REPO): scan(path) for path in files}


def uncovered(scans: dict, has: set[str], fetched: set[str]) -> list[str]:
  """The third-party imports that the GPU machine would lack: each distribution must be on it or
  in the fetch list, except the optional extras (requirements-extras.txt), which count only where
  imported at module level by a file that something else imports at module level, or that pytest
  collects, without importorskip-ing that extra first."""
  extras = pinned(REPO / "requirements-extras.txt") - pinned(REPO / "requirements.txt")
  mapping = importlib.metadata.packages_distributions()
  problems = set()
  for path, found in sorted(scans.items()):
    for module, at_module_level in found["third"]:
      dists = {norm(d) for d in mapping.get(module, [])}
      if not dists and norm(module) in extras:
        dists = {norm(module)}  # An extra that is not installed here.
      if not dists:
        problems.add(f"{module} ({path}): no installed distribution provides it")
      elif dists <= extras:
        if not at_module_level:
          continue
        name = module_of(REPO / path)
        importers = [str(other) for other, o in sorted(scans.items())
                     if other != path and name in o["local"] and module not in o["skips"]]
        if path.parts[0] == "tests" and module not in found["skips"]:
          importers.append("pytest")
        if importers:
          problems.add(f"{module} ({path}): the optional {', '.join(sorted(dists))}, imported at "
                       f"module level where {', '.join(importers)} imports it at module level")
      elif not dists & (has | fetched):
        problems.add(f"{module} ({path}): {', '.join(sorted(dists))} is neither on the GPU "
                     "machine nor in fetch_gpu_wheels.sh's GPU_WHEELS")
  return sorted(problems)


def test_the_fetch_list_covers_what_our_code_imports():
  has, fetched = fetch_lists(FETCH.read_text())
  scans = scan_all()
  third = {m for found in scans.values() for m, _ in found["third"]}
  # What we know the package uses, so that a broken scan cannot pass by finding nothing.
  assert {"jax", "flax", "optax", "orbax", "ml_collections", "tensorboardX", "numpy"} <= third
  assert ("ml_collections", True) in scans[pathlib.Path("inn_jax/train/config.py")]["third"]
  assert uncovered(scans, has, fetched) == []
  # Fetch only what the GPU machine lacks, and what requirements.txt pins (or the list pins).
  assert not fetched & has, f"the GPU machine already has {fetched & has}"
  text = re.search(r"^GPU_WHEELS=\(([^)]*)\)", FETCH.read_text(), re.M).group(1)
  for name in text.split():
    assert "==" in name or norm(name) in pinned(REPO / "requirements.txt"), name


def test_the_coverage_check_fails_without_a_needed_wheel():
  has, fetched = fetch_lists(FETCH.read_text())
  scans = scan_all()
  problems = uncovered(scans, has, fetched - {"tensorboardx"})
  assert problems and all(p.startswith("tensorboardX ") for p in problems), problems
  problems = uncovered(scans, has - {"flax"}, fetched)
  assert problems and all(p.startswith("flax ") for p in problems), problems
  # The optional TFDS module, imported at module level by the trainer, would break it.
  scans[pathlib.Path("inn_jax/train/loop.py")]["local"].add("inn_jax.data.tfds_builders")
  problems = uncovered(scans, has, fetched)
  assert problems and all(p.startswith("tensorflow_datasets ") for p in problems), problems


def kinds_packages(text: str) -> set[str]:
  section = text.split("## Python packages already there", 1)[1]
  listed = re.search(r"nvidia-h200:.*?Packages: (.*?)\.\s*$", section, re.S | re.M)
  assert listed, "KINDS.md's package list for nvidia-h200 was not found"
  return {norm(n) for n in listed.group(1).split(", ")}


@pytest.mark.skipif(not KINDS.exists(), reason=f"{KINDS} exists only in this workplace")
def test_the_copied_gpu_list_is_kinds_md():
  has, _ = fetch_lists(FETCH.read_text())
  on_gpu = kinds_packages(KINDS.read_text())
  assert len(on_gpu) > 100
  assert has <= on_gpu, f"fetch_gpu_wheels.sh's GPU_HAS names {has - on_gpu}, not in {KINDS}"


@pytest.mark.skipif(not (REPO / "wheels" / "gpu").is_dir(),
                    reason="no wheels/gpu/ (bash scripts/fetch_gpu_wheels.sh makes it)")
def test_the_fetched_wheels_are_the_list_at_its_pins():
  has, fetched = fetch_lists(FETCH.read_text())
  wheels = sorted((REPO / "wheels" / "gpu").glob("*.whl"))
  names = [norm(w.name.split("-")[0]) for w in wheels]
  assert sorted(names) == sorted(fetched), "run bash scripts/fetch_gpu_wheels.sh again"
  pins = {norm(m.group(1)): m.group(2) for m in re.finditer(
      r"^([A-Za-z0-9_.-]+)==(\S+)", (REPO / "requirements.txt").read_text(), re.M)}
  for whl in wheels:
    name, version = whl.name.split("-")[:2]
    assert whl.name.endswith("-none-any.whl"), f"{whl.name} is not pure Python"
    assert pins.get(norm(name), version) == version, f"{whl.name}: requirements.txt pins another"
    with zipfile.ZipFile(whl) as z:
      meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
      for line in z.read(meta).decode().splitlines():
        if line.startswith("Requires-Dist:") and "extra ==" not in line:
          need = norm(re.match(r"\s*([A-Za-z0-9_.-]+)", line.split(":", 1)[1]).group(1))
          assert need in has | fetched, f"{whl.name} needs {need}, which the GPU machine lacks"
