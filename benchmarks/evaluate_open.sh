#!/usr/bin/env bash
# Every measured figure of the open-domain models (weights/vqct-open-f8, weights/baseline-open-f8):
#   benchmarks/evaluate_open.sh [DATA_ROOT [MODEL...]]   (DATA_ROOT defaults to ../shared/data, MODEL to both)
# Naming models re-measures only those (a round that retrains only the default keeps the baseline's files).
# Writes benchmarks/results/open_f8_<model>_<split>.json plus a grid and a usage plot for each.
# Native evaluation: the test photos have a short side of 256 px, so a 256x256 centre crop is a crop
# at native scale; 128 and 512 resize the short side first. Faces and birds are subsampled evenly
# (--stride) to keep a CPU run short; N is in each report.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATA="${1:-../shared/data}"
shift $(( $# > 0 ? 1 : 0 ))
MODELS=(vqct-open-f8 baseline-open-f8)
[ $# -eq 0 ] || MODELS=("$@")
OUT=benchmarks/results
run() {  # model split data resolution [extra args...]
    local model=$1 split=$2 data=$3 res=$4; shift 4
    vqct eval --model "$model" --data "$data" --resolution "$res" --no-external --quiet \
        -o "$OUT/open_f8_${model}_${split}.json" "$@"
}
for model in "${MODELS[@]}"; do
    run "$model" open256 "$DATA/open/test.txt" 256 --jpeg-anchor
    if [ "$model" = vqct-open-f8 ]; then
        run vqct-open-f8 open128 "$DATA/open/test.txt" 128 --jpeg-anchor
        run vqct-open-f8 open512 "$DATA/open/test.txt" 512 --limit 50 --jpeg-anchor
    fi
    run "$model" faces256 "$DATA/faces256/test.txt" 256 --stride 10
    run "$model" birds224 "$DATA/birds227/test.txt" 224 --stride 30
done
