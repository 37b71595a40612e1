#!/usr/bin/env bash
# After a device call, here: put back what gpu_pack.sh moved out of the working tree, then place
# what came back (FILES_AT, the folder the device reply names) under runs/gpu-job/ and the
# gpu_*.json results under benchmarks/results/. Usage: bash scripts/gpu_restore.sh [FILES_AT]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
git checkout -- weights benchmarks/results vqct_tokenizer/codebook/priors
if [ "$#" -ge 1 ]; then
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    python benchmarks/gpu_job.py unpack "$@"
fi
