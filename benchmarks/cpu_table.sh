#!/usr/bin/env bash
# The README's CPU benchmark table, in one session on a quiet machine (about an hour on 2 cores;
# the reference's train step needs about 17 GiB of RAM). Everything lands in benchmarks/results/cpu
# (replaced on a rerun):
#   1. the paper's PyTorch INN at 8 x 256 as one batch, train and forward (torch_reference.sh);
#   2. our INN in the paper's form (inn_paper, the reference's 4,219,163 parameters) at 8 x 256,
#      as one batch with model.remat=rows (K=1: the memory comparison) and with the trainer's
#      defaults (auto: the speed comparison), with the ratios against 1.; also K=1 without
#      rematerialisation (which does not fit: its estimate is the figure) and K=2, 4;
#   3. our default INN form (default_form/) and the baselines at the paper's sizes (baselines/),
#      at the trainer's automatic K;
#   4. the INN's CPU scan methods at the trainer's automatic K (scan_methods/): the compiled
#      kernel and the XLA ones. The associative scan keeps every state for the backward pass
#      (~23 GiB at this size): add it by hand.
#
#   PYTHON=.venv/bin/python bash benchmarks/cpu_table.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py="${PYTHON:-python}"
out=benchmarks/results/cpu
paper=(--sizes paper --batch 8 --seq 256)
mkdir -p "$out"
bash benchmarks/torch_reference.sh --out "$out/torch_ref_train_8x256.json"
bash benchmarks/torch_reference.sh --mode infer --out "$out/torch_ref_infer_8x256.json"
"$py" -m inn_jax.bench --models inn --inn_form paper "${paper[@]}" \
    --inn_settings 1:rows,1,2,4,auto --scan_methods none \
    --torch_ref "$out/torch_ref_train_8x256.json" "$out/torch_ref_infer_8x256.json" \
    --out "$out" --overwrite
"$py" -m inn_jax.bench --models inn --inn_form default "${paper[@]}" --inn_settings auto \
    --scan_methods none --out "$out/default_form" --overwrite
"$py" -m inn_jax.bench --models mamba,lstm,transformer "${paper[@]}" --scan_methods none \
    --out "$out/baselines" --overwrite
"$py" -m inn_jax.bench --models inn --inn_form paper "${paper[@]}" --inn_settings auto \
    --scan_methods cpu_kernel,blocked,chunked_sequential,chunked,sequential --scan_size paper \
    --out "$out/scan_methods" --overwrite
