#!/usr/bin/env bash
# The README's CPU benchmark table, in one session on a quiet machine (about 30 minutes on 2 cores):
# the paper's PyTorch INN at 8 x 256, then our INN (8 micro-batches of 1 x 256, every XLA scan path)
# with the ratios against it, then the baselines.
#
#   PYTHON=.venv/bin/python bash benchmarks/cpu_table.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py="${PYTHON:-python}"
bash benchmarks/torch_reference.sh
bash benchmarks/torch_reference.sh --mode infer
"$py" -m inn_jax.bench --models inn --microbatches 8 \
    --scan_methods blocked,chunked_sequential,chunked,sequential \
    --torch_ref benchmarks/results/torch_ref_{train,infer}_8x256.json
"$py" -m inn_jax.bench --models mamba,lstm,transformer --scan_methods none \
    --out benchmarks/results/baselines
# The associative scan keeps every state for the backward pass: ~23 GiB at this size, one step.
"$py" -m inn_jax.bench --models inn --microbatches 8 --scan_methods associative --steps 1 \
    --warmup 0 --out benchmarks/results/associative
