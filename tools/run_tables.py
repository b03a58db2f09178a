#!/usr/bin/python3
"""GELU tables and the softmax exponent table (`vitq quantize --gelu-table BITS --softmax-table
BITS`, issue 16 item 2) against GELU and softmax in float — the table of docs/RESULTS.md between
<!-- tables:begin --> and <!-- tables:end -->.

For each model (the shared ViT-Ti and CIFAR ViT), method and bit-width: the plan calibrated on the
calibration split without tables, with 8- or 10-bit GELU tables, with a 10-bit softmax table, and
with both (8-bit GELU, 10-bit softmax), each quantized model directory run in integers on the dev
split with --reference (top-1, agreement with FP32's top-1, mean KL to FP32's softmax), and the
table rows also simulated (`--simulate`): the number of images whose prediction the integer run
and the simulator agree on.

  /usr/bin/python3 tools/run_tables.py --out bench/results/tables.json --results docs/RESULTS.md

Needs ../shared (models and data); exits with a message if it is absent. Resumes from --out.
"""
import argparse
import os
import sys

from results_md import load_results, machine, replace_block, save_results
from run_ablation import MODELS, evaluate, quantize_and_evaluate

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
# (method, bits) measured, with the method's flags.
CONFIGS = [("vitq", 8, ["--method", "vitq"]), ("vitq", 6, ["--method", "vitq"]), ("minmax", 8, ["--method", "minmax"]),
           # vitq's recipe within what int8-only runs: static per-tensor steps, u8 softmax output (the fast format)
           ("vitq --target int8-only", 8, ["--method", "vitq", "--target", "int8-only"]),
           # vitq's formats with the signed softmax grid (one P·V plane), no compensation: the fastest
           # plan within a point of the best W8A8 on ViT-Ti (bench/recipe_speed.py vitq-w8a8-signed+tables)
           ("vitq --softmax-grid signed", 8, ["--method", "vitq", "--softmax-grid", "signed", "--compensate", "none"])]
# Variants: name -> (column, the flags). Names "0", "8", "10" are the GELU-table widths.
VARIANTS = {"0": ("float", []), "8": ("8-bit GELU table", ["--gelu-table", 8]),
            "10": ("10-bit GELU table", ["--gelu-table", 10]), "s10": ("10-bit softmax table", ["--softmax-table", 10]),
            "s8": ("8-bit softmax table", ["--softmax-table", 8]),
            "8+s8": ("both, 8 bits", ["--gelu-table", 8, "--softmax-table", 8])}
# What a target runs (targets/*.json): int8-only has tables of at most 8 bits.
SKIP = {"vitq --target int8-only": {"10", "s10"}, "vitq --softmax-grid signed": {"8", "10", "s8", "s10"}}


def cell(r):
    s = f"{r['top1']:.2f} ({r['agreement']:.2f} %, {r['kl']:.4f})"
    if "same_predictions" in r:
        s += f"; int = sim {r['same_predictions']}/{r['images']}"
    return s


def table(results):
    rows = list(results.values())
    if not rows:
        return ""
    d = sorted({r["date"] for r in rows})
    cols = [v for v in VARIANTS if any(k.endswith("/" + v) for k in results)]  # the measured variants
    lines = [f"Measured {d[0] if len(d) == 1 else d[0] + ' to ' + d[-1]} on {machine()}; `tools/run_tables.py`. "
             "`vitq quantize --method M --bits B [--gelu-table G] [--softmax-table S]` on the calibration split (200 "
             "ImageNet / 1000 CIFAR images); the quantized model run in integers on the dev split: top-1 (agreement "
             "with FP32's top-1, mean KL to FP32's softmax); for the table rows also the images on which the integer "
             "run and the simulator give the same prediction.", "",
             "| model | method | W/A | " + " | ".join(VARIANTS[v][0] for v in cols) + " |",
             "|---|---|---|" + "---|" * len(cols)]
    for mk, m in MODELS.items():
        for meth, bits, _ in CONFIGS:
            r = {t: results.get(f"{mk}/{meth}/{bits}/{t}") for t in VARIANTS}
            if not r["0"]:
                continue
            lines.append(f"| {m['label']} | {meth} | {bits}/{bits} | " +
                         " | ".join(cell(r[t]) if r[t] else "–" for t in cols) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared-dir", default=os.path.join(REPO, "..", "shared"))
    ap.add_argument("--vitq", default=os.path.join(REPO, "build", "vitq"))
    ap.add_argument("--work-dir", default=os.path.join(REPO, "out", "tables"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--calib-size", type=int, default=0, help="calibration images (0 = the whole split)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True, help="results JSON (also read to resume: finished rows are kept)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--results", metavar="MD", help="replace the <!-- tables:begin/end --> block of this file")
    args = ap.parse_args()
    if not os.path.isdir(args.shared_dir):
        sys.exit(f"{args.shared_dir}: not found (the shared models and data); nothing measured")
    results = load_results(args.out)
    for mk in args.models.split(","):
        m = MODELS[mk]
        model = os.path.join(args.shared_dir, m["model"])
        cm = ["--class-map", os.path.join(args.shared_dir, m["class_map"])] if m["class_map"] else []
        for meth, bits, flags in CONFIGS:
            for t in args.variants.split(","):
                if t in SKIP.get(meth, ()):
                    continue
                key = f"{mk}/{meth}/{bits}/{t}"
                if key in results:
                    continue
                out = os.path.join(args.work_dir, mk, f"{meth.replace(' --target ', '-').replace(' --', '-').replace(' ', '-')}-w{bits}-{t}")
                extra = VARIANTS[t][1]
                common, _, e, _ = quantize_and_evaluate(args, mk, out, [*flags, "--bits", bits, *extra, "-q"])
                row = dict(common, method=meth, bits=bits, variant=t)
                if extra:
                    s = evaluate(args, model, m, cm, out, os.path.join(out, "eval_simulated.json"), "--simulate")
                    row["same_predictions"] = sum(a == b for a, b in zip(e["predictions"], s["predictions"]))
                results[key] = row
                print(f"{key:24s} top-1 {row['top1']:6.2f}  agreement {row['agreement']:6.2f}  KL {row['kl']:.4f}"
                      + (f"  int=sim {row['same_predictions']}/{row['images']}" if extra else ""), flush=True)
                save_results(args.out, results)
    if args.results:
        replace_block(args.results, "tables", table(results))


if __name__ == "__main__":
    main()
