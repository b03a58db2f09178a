#!/usr/bin/env bash
# vitq's main job on the bundled model: evaluate the FP32 model, quantize it with the
# paper's method (liu2021) at W8A8, W6A6 and W4A4 from 256 unlabelled training images,
# evaluate each plan, and print the accuracy table.
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

top1() { "$VITQ" eval --model "$MODEL" --data "$DATA" --quiet --json "$1" "${@:2}" > /dev/null
         /usr/bin/env python3 -c "import json,sys; print('%.2f' % json.load(open(sys.argv[1]))['top1'])" "$1"; }

echo "model: $MODEL   eval: $DATA   calibration: 256 images of $CALIB"
fp=$(top1 "$OUT/fp32.json")
rows=("FP32|32/32|$fp|-|-")
for b in 8 6 4; do
  dir="$OUT/liu2021_w${b}a${b}"
  "$VITQ" quantize --model "$MODEL" --calib "$CALIB" --method liu2021 --bits "$b" --calib-size 256 -o "$dir" --quiet > "$dir.log"
  acc=$(top1 "$dir/eval.json" --plan "$dir/plan.json")
  secs=$(/usr/bin/env python3 -c "import json,sys; print('%.1f' % json.load(open(sys.argv[1]))['seconds'])" "$dir/report.json")
  rows+=("liu2021|$b/$b|$acc|$(/usr/bin/env python3 -c "print('%+.2f' % ($acc - $fp))")|$secs")
done
printf '\n%-10s %-6s %-8s %-8s %s\n' method W/A top-1 "vs FP32" "calibration s"
for r in "${rows[@]}"; do IFS='|' read -r m w a d s <<< "$r"; printf '%-10s %-6s %-8s %-8s %s\n' "$m" "$w" "$a" "$d" "$s"; done
echo
echo "plans and reports: $OUT/*/plan.json, report.json (simulated quantization; integer execution: vitq eval --model on a quantized model dir)"
