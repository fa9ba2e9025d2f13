#!/usr/bin/env bash
# Set-up: a virtual environment on a Python >= 3.12 (found on PATH or among pyenv's versions, see
# scripts/find_python.sh) with the pinned requirements and inn_jax installed editable.
#
#   bash scripts/setup.sh                  # makes .venv, or updates it
#   bash scripts/setup.sh --fresh DIR      # deletes DIR first and makes it (.ci/run: .venv-ci)
#   bash scripts/setup.sh --extras [DIR]   # also the pinned extras (requirements-extras.txt):
#                                          # tfds (TensorFlow Datasets, no TF) and wandb
#   bash scripts/setup.sh --jax 0.11.2 DIR # the pins, but jax and jaxlib at this version
#                                          # (.ci/run: .venv-ci-jax0112, the oldest JAX we support)
#   PYTHON=/path/to/python3.12 bash scripts/setup.sh    # this interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/find_python.sh

fresh=0
extras=0
jax_version=
venv=.venv
while [ $# -gt 0 ]; do
  case "$1" in
    --fresh) fresh=1 ;;
    --extras) extras=1 ;;
    --jax)
      if [ $# -lt 2 ] || [ -z "$2" ] || [ "${2#-}" != "$2" ]; then
        echo "setup: --jax takes a version, e.g. --jax 0.11.2" >&2
        exit 2
      fi
      jax_version="$2"
      shift ;;
    -*) echo "setup: unknown option $1; usage: bash scripts/setup.sh [--fresh] [--extras]" \
             "[--jax VERSION] [DIR]" >&2
        exit 2 ;;
    *) venv="$1" ;;
  esac
  shift
done

if ! py="$(find_python)"; then
  echo "setup: no Python >= 3.12 found (tried \$PYTHON, python3.12, python3.13, python3 and" \
       "pyenv's versions); install one (e.g. 'pyenv install 3.12') or set PYTHON=/path/to/it." >&2
  exit 2
fi
echo "setup: using $py ($("$py" --version 2>&1))"
if [ "$fresh" = 1 ]; then rm -rf "$venv"; fi
if [ -e "$venv" ] && ! python_ok "$venv/bin/python"; then
  echo "setup: $venv exists but holds no Python >= 3.12; delete it or run with --fresh $venv." >&2
  exit 2
fi
[ -e "$venv" ] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
reqs=(-r requirements.txt)
if [ -n "$jax_version" ]; then
  # The same pins with jax and jaxlib at $jax_version, in one install, so that pip reports a pin
  # that cannot go with that JAX rather than moving it.
  pins=$(mktemp)
  trap 'rm -f "$pins"' EXIT
  sed -E "s/^(jax|jaxlib)==.*/\1==$jax_version/" requirements.txt > "$pins"
  [ "$(grep -cE "^(jax|jaxlib)==$jax_version\$" "$pins")" = 2 ] || {
    echo "setup: requirements.txt pins no jax== and jaxlib== lines to replace" >&2; exit 2; }
  echo "setup: the pinned requirements with jax and jaxlib at $jax_version"
  reqs=(-r "$pins")
fi
# In one install with the base pins, so that an extra cannot move them.
if [ "$extras" = 1 ]; then reqs+=(-r requirements-extras.txt); fi
"$venv/bin/python" -m pip install --quiet "${reqs[@]}"
"$venv/bin/python" -m pip install --quiet --no-deps -e .
"$venv/bin/python" -c 'import jax, flax; print("setup: jax", jax.__version__, "flax",
                       flax.__version__, jax.devices())'
if [ -n "$jax_version" ]; then
  "$venv/bin/python" - "$jax_version" <<'EOF'
import sys, jax, jaxlib
want = sys.argv[1]
if (jax.__version__, jaxlib.__version__) != (want, want):
  sys.exit(f"setup: asked for jax {want}, got jax {jax.__version__}, jaxlib {jaxlib.__version__}")
EOF
fi
if [ "$extras" = 1 ]; then
  "$venv/bin/python" -c 'import array_record, tensorflow_datasets as tfds, wandb
print("setup: extras tensorflow_datasets", tfds.__version__, "wandb", wandb.__version__)'
fi
echo "setup: done; activate it with: . $venv/bin/activate"
