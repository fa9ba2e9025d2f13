# find_python: prints the path of a Python >= 3.12, or fails. Sourced by scripts/setup.sh (and so
# by .ci/run). Tries $PYTHON if set, then python3.12, python3.13, python3 on PATH, then pyenv's
# versions (3.12 first, what the project is developed on, then the newest): on a pyenv machine
# `python3.12` is a shim that fails unless that version is selected.

python_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }

find_python() {
  local c v root
  if [ -n "${PYTHON:-}" ]; then
    if python_ok "$PYTHON"; then echo "$PYTHON"; return 0; fi
    echo "PYTHON=$PYTHON is not a Python >= 3.12" >&2
    return 1
  fi
  for c in python3.12 python3.13 python3; do
    if command -v "$c" >/dev/null 2>&1 && python_ok "$c"; then command -v "$c"; return 0; fi
  done
  root="${PYENV_ROOT:-}"
  if [ -z "$root" ] && command -v pyenv >/dev/null 2>&1; then root="$(pyenv root)"; fi
  [ -n "$root" ] || root="$HOME/.pyenv"
  for v in $(ls -1 "$root/versions" 2>/dev/null | sort -rV | grep '^3\.12\.'; \
             ls -1 "$root/versions" 2>/dev/null | sort -rV); do
    c="$root/versions/$v/bin/python3"
    if [ -x "$c" ] && python_ok "$c"; then echo "$c"; return 0; fi
  done
  return 1
}
