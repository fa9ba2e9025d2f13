#!/usr/bin/env bash
# Set-up: a virtual environment on a Python >= 3.12 (found on PATH or among pyenv's versions, see
# scripts/find_python.sh) with the pinned requirements and inn_jax installed editable.
#
#   bash scripts/setup.sh                  # makes .venv, or updates it
#   bash scripts/setup.sh --fresh DIR      # deletes DIR first and makes it (.ci/run: .venv-ci)
#   bash scripts/setup.sh --extras [DIR]   # also the pinned extras (requirements-extras.txt):
#                                          # tfds (TensorFlow Datasets, no TF) and wandb
#   PYTHON=/path/to/python3.12 bash scripts/setup.sh    # this interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/find_python.sh

fresh=0
extras=0
venv=.venv
while [ $# -gt 0 ]; do
  case "$1" in
    --fresh) fresh=1 ;;
    --extras) extras=1 ;;
    -*) echo "setup: unknown option $1; usage: bash scripts/setup.sh [--fresh] [--extras] [DIR]" >&2
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
# In one install with the base pins, so that an extra cannot move them.
if [ "$extras" = 1 ]; then reqs+=(-r requirements-extras.txt); fi
"$venv/bin/python" -m pip install --quiet "${reqs[@]}"
"$venv/bin/python" -m pip install --quiet --no-deps -e .
"$venv/bin/python" -c 'import jax, flax; print("setup: jax", jax.__version__, "flax",
                       flax.__version__, jax.devices())'
if [ "$extras" = 1 ]; then
  "$venv/bin/python" -c 'import array_record, tensorflow_datasets as tfds, wandb
print("setup: extras tensorflow_datasets", tfds.__version__, "wandb", wandb.__version__)'
fi
echo "setup: done; activate it with: . $venv/bin/activate"
