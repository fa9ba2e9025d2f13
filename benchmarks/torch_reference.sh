#!/usr/bin/env bash
# Times the paper's PyTorch INN (../shared/reference_torch, a measuring instrument outside the
# project) and saves its one JSON line, for `python -m inn_jax.bench --torch_ref FILE`.
#
#   bash benchmarks/torch_reference.sh                       # train, 8 x 256, 3 steps
#   bash benchmarks/torch_reference.sh --mode infer --batch 4 --seq 128 --steps 2 --out f.json
#
# Torch lives in a throwaway venv (/tmp/torchref, made on first use); it is never a project
# dependency. Train at 8 x 256 needs about 17 GiB of RAM: run it when the machine is quiet.
set -euo pipefail

mode=train batch=8 seq=256 steps=3 warmup=1 out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --mode|--batch|--seq|--steps|--warmup|--out) declare "${1#--}=$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "torch_reference.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$mode" == train || "$mode" == infer ]] || { echo "--mode must be train or infer" >&2; exit 2; }

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ref="${REFERENCE_TORCH_DIR:-$repo/../shared/reference_torch}"
venv="${TORCHREF_VENV:-/tmp/torchref}"
out="${out:-torch_ref_${mode}_${batch}x${seq}.json}"  # Default: the current directory.
[[ -f "$ref/bench.py" ]] || { echo "no $ref/bench.py: set REFERENCE_TORCH_DIR" >&2; exit 1; }

if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "import torch, numpy" 2>/dev/null
then
  python3 -m venv "$venv"
  "$venv/bin/pip" install torch==2.13.0 numpy
fi

mkdir -p "$(dirname "$out")"
line="$("$venv/bin/python" "$ref/bench.py" --mode "$mode" --batch "$batch" --seq "$seq" \
        --steps "$steps" --warmup "$warmup" | tail -n 1)"
echo "$line" > "$out"
echo "$line"
echo "saved $out" >&2
