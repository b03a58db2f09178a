#!/usr/bin/env bash
# vitq's main job on the bundled model: evaluate the FP32 model, quantize it with vitq's own
# method (vitq) and with the paper's (liu2021) at W8A8, W6A6 and W4A4 from 256 unlabelled
# training images, evaluate each plan, and print the accuracy table.
#
#   tools/main_job.sh [MODEL_DIR] [EVAL_DATA] [CALIB_DATA] [OUT_DIR]
#
# Defaults: the bundled Fashion-MNIST ViT, Debian's Fashion-MNIST test split (evaluation)
# and training split (calibration), output under ./out/main_job.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/vit_fmnist_patch4_28}
DATA=${2:-/usr/share/datasets/fashion-mnist}
CALIB=${3:-/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz}
OUT=${4:-out/main_job}
VITQ=${VITQ:-build/vitq}
[ -x "$VITQ" ] || { echo "main_job: $VITQ not found; run ./setup.sh first" >&2; exit 1; }
mkdir -p "$OUT"

# top1 JSON_OUT MODEL_DIR [eval flags...]: evaluate, print top-1 in %.
top1() { "$VITQ" eval --model "$2" --data "$DATA" --quiet --json "$1" "${@:3}" > /dev/null
         /usr/bin/env python3 -c "import json,sys; print('%.2f' % json.load(open(sys.argv[1]))['top1'])" "$1"; }
mib() { /usr/bin/env python3 -c "import os,sys; print('%.2f' % (os.path.getsize(sys.argv[1]) / 2**20))" "$1"; }

echo "model: $MODEL   eval: $DATA   calibration: 256 images of $CALIB"
fp=$(top1 "$OUT/fp32.json" "$MODEL")
rows=("FP32|32/32|$fp|-|-|-|$(mib "$MODEL/model.safetensors")")
for method in vitq liu2021; do
  for b in 8 6 4; do
    dir="$OUT/${method}_w${b}a${b}"
    "$VITQ" quantize --model "$MODEL" --calib "$CALIB" --method "$method" --bits "$b" --calib-size 256 -o "$dir" --force --quiet > "$dir.log"
    acc=$(top1 "$dir/eval_simulated.json" "$MODEL" --plan "$dir/plan.json")
    int=$(top1 "$dir/eval_integer.json" "$dir")
    secs=$(/usr/bin/env python3 -c "import json,sys; print('%.1f' % json.load(open(sys.argv[1]))['seconds'])" "$dir/report.json")
    rows+=("$method|$b/$b|$acc|$(/usr/bin/env python3 -c "print('%+.2f' % ($acc - $fp))")|$int|$secs|$(mib "$dir/model.safetensors")")
  done
done
printf '\n%-9s %-6s %-10s %-8s %-10s %-14s %s\n' method W/A simulated "vs FP32" integer "calibration s" "file MiB"
for r in "${rows[@]}"; do IFS='|' read -r m w a d i s f <<< "$r"; printf '%-9s %-6s %-10s %-8s %-10s %-14s %s\n' "$m" "$w" "$a" "$d" "$i" "$s" "$f"; done
echo
echo "simulated: the FP32 model run with the plan's quantize-dequantize (vitq eval --plan);"
echo "integer: the quantized model directory run with int8 GEMMs (vitq eval --model $OUT/vitq_w8a8)."
echo "vitq: the project's method (its recipe: docs/RESULTS.md); liu2021: the paper's."
echo "plans, reports and quantized models: $OUT/{vitq,liu2021}_w*a*/{plan.json,report.json,model.safetensors}"
