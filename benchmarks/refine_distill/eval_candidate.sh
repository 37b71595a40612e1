#!/usr/bin/env bash
# Round 14 probe: store a distilled model as the default ships (fp16 decoder) and measure it per the rule.
# usage: benchmarks/refine_distill/eval_candidate.sh MODEL_DIR NAME [LIMIT]
set -euo pipefail
src=$1; name=$2; limit=${3:-}
export OMP_NUM_THREADS=${THREADS:-2}
python - "$src" "runs/export/r14-$name" <<'PY'
import sys, torch
from vqct_tokenizer import VQCTTokenizer
tok = VQCTTokenizer.from_pretrained(sys.argv[1])
tok.save_pretrained(sys.argv[2], dtype=torch.float16, keep_float32=("model.encoder", "model.quant_conv"))
PY
vqct eval --model runs/export/r14-$name --data ../shared/data/open/test.txt --resolution 256 --no-external --quiet \
    ${limit:+--limit $limit} -o runs/r14/eval_${name}_open256${limit:+_$limit}.json
[ -n "$limit" ] || python benchmarks/plain_inputs.py --models runs/export/r14-$name --out runs/r14/plain_$name
