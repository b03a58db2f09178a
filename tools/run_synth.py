#!/usr/bin/python3
"""Calibration on synthetic images (`vitq synth`, issue 19) against the real calibration split — the
table of docs/RESULTS.md between <!-- synth:begin --> and <!-- synth:end -->.

For each model (the shared ViT-Ti and CIFAR ViT): two sets of --images synthetic images, each
generated once and timed: `centres` (class centres from one real calibration image per class:
`--centres-from` the calibration split) and `free` (data-free: the model alone). Then for each
bit-width and method (vitq's recipe, percentile, the paper's liu2021 with --fast) calibrated on --images real
calibration images (a seeded subset of the split), on the centres set and on the free set, each
quantized model directory run in integers on the dev split with --reference: top-1, agreement with
FP32's top-1, mean KL(p_FP32 || p).

  /usr/bin/python3 tools/run_synth.py --out bench/results/synth.json --results docs/RESULTS.md
  /usr/bin/python3 tools/run_synth.py --models cifar --bits 6 --out /tmp/s.json

Needs ../shared (models and data); exits with a message if it is absent. Resumes from --out and
reuses a generated set whose report.json is in --work-dir.
"""
import argparse
import json
import os
import sys

from results_md import load_results, machine, replace_block, run, save_results
from run_ablation import MODELS, quantize_and_evaluate

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SETS = {"real": "real calibration images", "centres": "synthetic, class centres (1 image/class)",
        "free": "synthetic, data-free"}
# Methods measured (name -> quantize arguments); the table's order.
METHODS = {"vitq": ["--method", "vitq"], "percentile": ["--method", "percentile"],
           "liu2021": ["--method", "liu2021", "--fast"]}


def generate(args, mk, kind):
    """The synthetic set `kind` of model mk (generated unless its report.json exists); its report."""
    m = MODELS[mk]
    out = os.path.join(args.work_dir, mk, kind)
    if not os.path.exists(os.path.join(out, "report.json")):
        cmd = [args.vitq, "synth", "--model", os.path.join(args.shared_dir, m["model"]), "-o", out, "--force",
               "--images", args.images, "--threads", args.threads, "--seed", args.seed]
        if kind == "centres":
            cmd += ["--centres-from", os.path.join(args.shared_dir, m["calib"])]
            if m["class_map"]:
                cmd += ["--class-map", os.path.join(args.shared_dir, m["class_map"])]
        run(cmd)
    with open(os.path.join(out, "report.json")) as f:
        return out, json.load(f)


def cell(r):
    return f"{r['top1']:.2f} ({r['agreement']:.2f} %, {r['kl']:.4f})"


def table(results):
    rows = [r for k, r in results.items() if not k.endswith("/gen")]
    if not rows:
        return ""
    d = sorted({r["date"] for r in rows})
    lines = [f"Measured {d[0] if len(d) == 1 else d[0] + ' to ' + d[-1]} on {machine()}; `tools/run_synth.py`. "
             "Each method (`vitq quantize --method M --bits B`; liu2021 with `--fast`; vitq with its default "
             "compensation) calibrated on 128 images of each kind; the quantized model run in integers on the dev "
             "split: top-1 (agreement with FP32's top-1, mean KL to FP32's softmax).", "",
             "| model | method | W/A | " + " | ".join(SETS.values()) + " | top-1 gap: centres / free |",
             "|---|---|---|---|---|---|---|"]
    gens = []
    for mk, m in MODELS.items():
        for meth in METHODS:
            for bits in (8, 6, 4):
                r = {s: results.get(f"{mk}/{s}/{meth}/{bits}") for s in SETS}
                if not r["real"]:
                    continue
                gap = " / ".join(f"{r[s]['top1'] - r['real']['top1']:+.2f}" if r[s] else "–"
                                 for s in ("centres", "free"))
                lines.append(f"| {m['label']} | {meth} | {bits}/{bits} | " +
                             " | ".join(cell(r[s]) if r[s] else "–" for s in SETS) + f" | {gap} |")
        for s in ("centres", "free"):
            g = results.get(f"{mk}/{s}/gen")
            if g:
                gens.append(f"{m['label']}, {s}: {g['images']} images × {g['iters']} Adam steps in "
                            f"{g['seconds'] / 60:.1f} min ({g['threads']} threads, peak memory {g['peak_mb']:.0f} MB); "
                            f"the model gives {100 * g['hit']:.0f} % of them their target class")
    if gens:
        lines += ["", "Generation (`vitq synth`, defaults): " + "; ".join(gens) + "."]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared-dir", default=os.path.join(REPO, "..", "shared"))
    ap.add_argument("--vitq", default=os.path.join(REPO, "build", "vitq"))
    ap.add_argument("--work-dir", default=os.path.join(REPO, "out", "synth"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--bits", default="8,6,4")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True, help="results JSON (also read to resume: finished rows are kept)")
    ap.add_argument("--results", metavar="MD", help="replace the <!-- synth:begin/end --> block of this file")
    args = ap.parse_args()
    if not os.path.isdir(args.shared_dir):
        sys.exit(f"{args.shared_dir}: not found (the shared models and data); nothing measured")
    args.calib_size = args.images
    results = load_results(args.out)
    for k in [k for k in results if k.count("/") == 2 and not k.endswith("/gen")]:  # rows before --methods: vitq
        mk, s, bits = k.split("/")
        results[f"{mk}/{s}/vitq/{bits}"] = dict(results.pop(k), method="vitq")
    for mk in args.models.split(","):
        for s in args.sets.split(","):
            calib = None
            if s != "real":
                calib, rep = generate(args, mk, s)
                results[f"{mk}/{s}/gen"] = dict(images=rep["images"], iters=rep["options"]["iters"],
                                                seconds=rep["seconds"]["generation"], threads=rep["threads"],
                                                peak_mb=rep["peak_memory_mb"], hit=rep["final"]["target_class_top1"])
            for meth in args.methods.split(","):
                for bits in map(int, args.bits.split(",")):
                    key = f"{mk}/{s}/{meth}/{bits}"
                    if key in results:
                        continue
                    out = os.path.join(args.work_dir, mk, f"q-{s}-{meth}-{bits}")
                    common, _, _, _ = quantize_and_evaluate(args, mk, out, [*METHODS[meth], "--bits", bits, "-q"],
                                                            calib=calib)
                    results[key] = dict(common, set=s, method=meth, bits=bits)
                    r = results[key]
                    print(f"{key:28s} top-1 {r['top1']:6.2f}  agreement {r['agreement']:6.2f}  KL {r['kl']:.4f}",
                          flush=True)
                    save_results(args.out, results)
    save_results(args.out, results)
    if args.results:
        replace_block(args.results, "synth", table(results))


if __name__ == "__main__":
    main()
