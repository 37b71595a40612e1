#!/usr/bin/env bash
# Before a device call, here: fill .gpujob/ (photos, float16 default model, wheels, EfficientNet-Lite0
# weights in float16), move weights/, benchmarks/results/ and unused priors out of the working tree,
# and print what will travel against the 64 MiB limit. Needs PyPI (pip download) the first time.
# After the call: bash scripts/gpu_restore.sh FILES_AT. See benchmarks/gpu_job.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python benchmarks/gpu_job.py pack "$@"
