#!/usr/bin/python3
"""vitq's recipe on each hardware description (targets/*.json) — the table of docs/RESULTS.md
between <!-- targets:begin --> and <!-- targets:end -->.

For each model (the shared ViT-Ti and CIFAR ViT), target and bit-width: `vitq quantize --method vitq
--bits B --target T` on the calibration split (--calib-size, default 200), what the target changed
in the recipe (the header's line), then the quantized model directory run in integers on the dev
split with --reference: top-1, agreement with FP32's top-1, mean KL(p_FP32 || p); for onnx-qdq also
`vitq export --onnx` (the plan's target runs it as QDQ; validated by the ONNX checker; ONNX Runtime
is not installed here, see RESULTS' ONNX section for its agreement with vitq's simulation).

  /usr/bin/python3 tools/run_targets.py --out bench/results/targets.json --results docs/RESULTS.md
  /usr/bin/python3 tools/run_targets.py --models cifar --bits 6 --out /tmp/t.json

Needs ../shared (models and data); exits with a message if it is absent. Resumes from --out.
"""
import argparse
import os
import re
import sys

from results_md import load_results, machine, replace_block, run, save_results
from run_ablation import MODELS, quantize_and_evaluate

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TARGETS = ["cpu-vnni", "int8-only", "onnx-qdq"]


def measure(args, mk, target, bits):
    out = os.path.join(args.work_dir, mk, f"{target}-{bits}")
    common, _, _, log = quantize_and_evaluate(args, mk, out, ["--method", "vitq", "--bits", bits, "--target", target])
    changed = re.search(r"changed for the target \(it cannot run them\): (.*)", log)
    row = dict(common, target=target, bits=bits, changed=changed.group(1).strip() if changed else "")
    if target == "onnx-qdq":
        onnx = os.path.join(out, "model.onnx")
        run([args.vitq, "export", "--model", out, "--onnx", onnx])
        row["onnx_mb"] = os.path.getsize(onnx) / 1e6
    return row


def table(results):
    rows = list(results.values())
    d = sorted({r["date"] for r in rows})
    lines = [f"Measured {d[0] if len(d) == 1 else d[0] + ' to ' + d[-1]} on {machine()}; `tools/run_targets.py`. "
             "`vitq quantize --method vitq --bits B --target T`; what the target changed in the recipe is what "
             "`quantize` printed; the quantized model directory run in integers on the dev split (vitq's runtime "
             "runs all three plans; for `onnx-qdq` the plan was also exported as ONNX QDQ).", "",
             "| model | target | W/A | top-1 | agreement | KL | changed for the target | calib. | file ÷ FP32 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for mk in MODELS:
        for bits in (8, 6, 4):
            for t in TARGETS:
                r = results.get(f"{mk}/{t}/{bits}")
                if r:
                    lines.append(f"| {MODELS[mk]['label']} | {t} | {bits}/{bits} | {r['top1']:.2f} | "
                                 f"{r['agreement']:.2f} | {r['kl']:.4f} | {r['changed'] or '–'} | "
                                 f"{r['calib_seconds']:.0f} s | {r['file_ratio']:.3f} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared-dir", default=os.path.join(REPO, "..", "shared"))
    ap.add_argument("--vitq", default=os.path.join(REPO, "build", "vitq"))
    ap.add_argument("--work-dir", default=os.path.join(REPO, "out", "targets"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--bits", default="8,6")
    ap.add_argument("--calib-size", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True, help="results JSON (also read to resume: finished rows are kept)")
    ap.add_argument("--results", metavar="MD", help="replace the <!-- targets:begin/end --> block of this file")
    args = ap.parse_args()
    if not os.path.isdir(args.shared_dir):
        sys.exit(f"{args.shared_dir}: not found (the shared models and data); nothing measured")
    results = load_results(args.out)
    for mk in args.models.split(","):
        for bits in map(int, args.bits.split(",")):
            for t in args.targets.split(","):
                key = f"{mk}/{t}/{bits}"
                if key in results:
                    continue
                results[key] = measure(args, mk, t, bits)
                r = results[key]
                print(f"{key:28s} top-1 {r['top1']:6.2f}  agreement {r['agreement']:6.2f}  KL {r['kl']:.4f}  "
                      f"({r['calib_seconds']:.0f} s) {r['changed']}", flush=True)
                save_results(args.out, results)
    if args.results:
        replace_block(args.results, "targets", table(results))


if __name__ == "__main__":
    main()
