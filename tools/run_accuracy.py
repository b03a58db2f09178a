#!/usr/bin/python3
"""Accuracy of every PTQ method and bit-width on the shared models — the table of docs/RESULTS.md.

For each model and configuration: `vitq quantize` on the calibration split, then
`vitq eval --plan` on the dev split (simulated quantization). Records top-1, calibration
time and peak memory (from vitq's report), and writes JSON plus a markdown table. With
--results (old name: --readme), replaces the block between <!-- accuracy:begin --> and
<!-- accuracy:end --> of that file. The JSON (--out) is the raw data of the table; the
committed one belongs in bench/results/accuracy.json, beside the speed results.

  /usr/bin/python3 tools/run_accuracy.py --out bench/results/accuracy.json --results docs/RESULTS.md \\
      --calib-sizes vit_ti=64,cifar=256
  /usr/bin/python3 tools/run_accuracy.py --models cifar --configs liu2021-w6a6 --out /tmp/a.json

Needs ../shared (models and data); exits with a message if it is absent.
"""
import argparse
import datetime
import json
import os
import sys
import time

from results_md import machine, replace_block, run

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

MODELS = {
    "vit_ti": dict(label="ViT-Ti/16 (augreg, ImageNet)", model="models/vit_tiny_patch16_224",
                   calib="data/imagenet-sample/calib", dev="data/imagenet-sample/dev",
                   class_map="data/imagenet-sample/class_map.txt", calib_size=200),
    "cifar": dict(label="ViT CIFAR-10 (patch 4)", model="models/vit_cifar10_patch4_32",
                  calib="data/cifar10/calib", dev="data/cifar10/dev", class_map=None, calib_size=1000),
}

# name -> (row label, W/A label, vitq quantize arguments); None = the FP32 model.
def configs():
    c = {"fp32": ("FP32", "32/32", None)}
    for b in (8, 6, 4):
        for m in ("minmax", "percentile", "easyquant", "liu2021"):
            c[f"{m}-w{b}a{b}"] = (m, f"{b}/{b}", ["--method", m, "--bits", str(b)])
        # Approximations of the search that fit the 3-minute calibration goal (bench/calib_cost.py):
        # the ranking loss on 64-key subsets with the search on 64 tokens per image (rejected: it
        # costs accuracy), coarse-to-fine sweeps, and both of the latter (`--fast`).
        c[f"liu2021-rank-search-w{b}a{b}"] = ("liu2021 --rank-tokens 64 --search-tokens 64 (approximate)", f"{b}/{b}",
                                       ["--method", "liu2021", "--bits", str(b), "--rank-tokens", "64",
                                        "--search-tokens", "64"])
        c[f"liu2021-coarse-w{b}a{b}"] = ("liu2021 --coarse-stride 10 (approximate)", f"{b}/{b}",
                                         ["--method", "liu2021", "--bits", str(b), "--coarse-stride", "10"])
        c[f"liu2021-coarse-rank-w{b}a{b}"] = ("liu2021 --coarse-stride 10 --rank-tokens 64 (approximate)", f"{b}/{b}",
                                              ["--method", "liu2021", "--bits", str(b), "--coarse-stride", "10",
                                               "--rank-tokens", "64"])
        c[f"liu2021-us-w{b}a{b}"] = ("liu2021 + unsigned softmax grid", f"{b}/{b}",
                                     ["--method", "liu2021", "--bits", str(b), "--unsigned-softmax"])
        c[f"liu2021-ln-w{b}a{b}"] = ("liu2021 + LayerNorm smoothing", f"{b}/{b}",
                                     ["--method", "liu2021", "--bits", str(b), "--smooth-ln"])
        c[f"liu2021-fix-w{b}a{b}"] = ("liu2021 + both fixes", f"{b}/{b}",
                                      ["--method", "liu2021", "--bits", str(b), "--smooth-ln", "--unsigned-softmax"])
        c[f"percentile-ln-w{b}a{b}"] = ("percentile + LayerNorm smoothing", f"{b}/{b}",
                                        ["--method", "percentile", "--bits", str(b), "--smooth-ln"])
        # The peers' operating point (issue 14): per-channel weights, the unsigned softmax grid, and
        # the LayerNorm centring on top.
        c[f"percentile-pc-us-w{b}a{b}"] = ("percentile + per-channel weights + unsigned softmax", f"{b}/{b}",
                                           ["--method", "percentile", "--bits", str(b), "--per-channel-weights",
                                            "--unsigned-softmax"])
        c[f"percentile-pc-us-center-w{b}a{b}"] = ("percentile + per-channel weights + unsigned softmax + LN centring",
                                                  f"{b}/{b}", ["--method", "percentile", "--bits", str(b),
                                                               "--per-channel-weights", "--unsigned-softmax",
                                                               "--ln-center"])
        # The seed methods (issue 5), at their defaults: ACIQ with all three parts, LAPQ with its
        # default evaluation budget and loss subset, Bit-Split with percentile activations.
        c[f"aciq-w{b}a{b}"] = ("aciq", f"{b}/{b}", ["--method", "aciq", "--bits", str(b)])
        c[f"lapq-w{b}a{b}"] = ("lapq", f"{b}/{b}", ["--method", "lapq", "--bits", str(b)])
        c[f"bitsplit-w{b}a{b}"] = ("bitsplit", f"{b}/{b}", ["--method", "bitsplit", "--bits", str(b)])
    for b in (6, 8):
        c[f"liu2021-mp{b}"] = ("liu2021 mixed precision, the paper's nuclear-norm allocation", f"{b}MP",
                               ["--method", "liu2021", "--mixed-precision", str(b), "--mp-sensitivity", "nuclear"])
    # The paper's ablation at W6A6 (its Table 3 is at about 8 bits on ViT-B).
    c["abl-sim"] = ("ablation: similarity only", "6/6", ["--method", "liu2021", "--bits", "6", "--no-ranking",
                                                           "--no-bias-correction"])
    c["abl-rank"] = ("ablation: + ranking", "6/6", ["--method", "liu2021", "--bits", "6", "--no-bias-correction"])
    c["abl-bc"] = ("ablation: + bias correction", "6/6", ["--method", "liu2021", "--bits", "6", "--no-ranking"])
    return c


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared-dir", default=os.path.join(REPO, "..", "shared"))
    ap.add_argument("--vitq", default=os.path.join(REPO, "build", "vitq"))
    ap.add_argument("--work-dir", default=os.path.join(REPO, "out", "accuracy"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--configs", default="all", help="comma-separated config names, or 'all'")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True, help="results JSON (also read to resume: finished rows are kept)")
    ap.add_argument("--results", "--readme", dest="results", metavar="MD",
                    help="replace the <!-- accuracy:begin/end --> block of this markdown file (docs/RESULTS.md; "
                         "--readme is the old name)")
    ap.add_argument("--calib-sizes", default="",
                    help="calibration images per model, e.g. vit_ti=64,cifar=256 (default: all of calib: "
                         + ", ".join(f"{k}={m['calib_size']}" for k, m in MODELS.items()) + ")")
    args = ap.parse_args()
    for kv in filter(None, args.calib_sizes.split(",")):
        k, v = kv.split("=")
        if k not in MODELS:
            sys.exit(f"run_accuracy: --calib-sizes: unknown model {k} (known: {', '.join(MODELS)})")
        MODELS[k]["calib_size"] = int(v)
    if not os.path.isdir(args.shared_dir):
        sys.exit(f"run_accuracy: {args.shared_dir} not found (the shared models and data are needed)")
    cfgs = configs()
    names = list(cfgs) if args.configs == "all" else args.configs.split(",")
    results = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            results = json.load(f).get("results", {})
    for mk in args.models.split(","):
        m = MODELS[mk]
        model = os.path.join(args.shared_dir, m["model"])
        cm = ["--class-map", os.path.join(args.shared_dir, m["class_map"])] if m["class_map"] else []
        for name in names:
            key = f"{mk}/{name}"
            if key in results:
                continue
            label, wa, qargs = cfgs[name]
            t0 = time.time()
            row = dict(model=mk, config=name, label=label, bits=wa)
            ev = os.path.join(args.work_dir, mk, name, "eval.json")
            os.makedirs(os.path.dirname(ev), exist_ok=True)
            plan = []
            if qargs is not None:
                out = os.path.join(args.work_dir, mk, name)
                run([args.vitq, "quantize", "--model", model, "--calib", os.path.join(args.shared_dir, m["calib"]),
                     *cm, "--calib-size", m["calib_size"], "--threads", args.threads, "-o", out, "--force", "--quiet",
                     *qargs])
                with open(os.path.join(out, "report.json")) as f:
                    rep = json.load(f)
                row.update(calib_seconds=calib_seconds(rep), calib_peak_rss_mb=rep["peak_rss_mb"],
                           calib_images=rep["calibration"]["images"])
                qfile = os.path.join(out, "model.safetensors")
                if os.path.exists(qfile):  # the quantized model vitq quantize wrote
                    row.update(file_ratio=os.path.getsize(qfile) / os.path.getsize(os.path.join(model, "model.safetensors")))
                plan = ["--plan", os.path.join(out, "plan.json")]
            run([args.vitq, "eval", "--model", model, "--data", os.path.join(args.shared_dir, m["dev"]), *cm,
                 "--threads", args.threads, "--quiet", "--json", ev, *plan])
            with open(ev) as f:
                e = json.load(f)
            row.update(top1=e["top1"], top5=e["top5"], images=e["images"])
            results[key] = row
            print(f"{key:32s} top-1 {row['top1']:6.2f}  ({time.time() - t0:.0f} s)", flush=True)
            save(args, results)
    save(args, results)
    for key, row in results.items():  # rows from before the file-size column / mixed-precision time fix
        rpath = os.path.join(args.work_dir, row["model"], row["config"], "report.json")
        if "calib_seconds" in row and os.path.exists(rpath):
            with open(rpath) as f:
                row["calib_seconds"] = calib_seconds(json.load(f))
        qfile = os.path.join(args.work_dir, row["model"], row["config"], "model.safetensors")
        if "file_ratio" not in row and row["config"] != "fp32" and os.path.exists(qfile):
            fp = os.path.join(args.shared_dir, MODELS[row["model"]]["model"], "model.safetensors")
            row["file_ratio"] = os.path.getsize(qfile) / os.path.getsize(fp)
    save(args, results)
    if args.results:
        replace_block(args.results, "accuracy", table(results))


def calib_seconds(rep):
    """All of the calibration: earlier vitq reports counted only the final pass of a
    mixed-precision run in `seconds`; its `mixed_precision.seconds` is the whole."""
    return max(rep["seconds"], rep.get("mixed_precision", {}).get("seconds", 0.0))


def save(args, results):
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"date": datetime.date.today().isoformat(), "machine": machine(), "results": results}, f, indent=1)


def table(results):
    cfgs = configs()
    lines = [f"Measured {datetime.date.today().isoformat()} on {machine()}; `tools/run_accuracy.py`. "
             "Top-1 (%) on the dev split with simulated quantization; calibration time and peak memory of "
             "`vitq quantize` (2 threads) on unlabelled images of the `calib` split (count per table); size "
             "of the quantized model file it writes (`model.safetensors`) over the FP32 checkpoint's. "
             "The classifier head stays FP32; everything else of the paper is quantized.", ""]
    for mk, m in MODELS.items():
        rows = [r for k, r in results.items() if r["model"] == mk]
        if not rows:
            continue
        ncal = sorted({r["calib_images"] for r in rows if "calib_images" in r})
        dev = max(r["images"] for r in rows)
        lines += [f"**{m['label']}** — calibration: {', '.join(map(str, ncal))} images; dev: {dev} images", "",
                  "| method | W/A | top-1 | calib. time | peak mem. | model file ÷ FP32 |", "|---|---|---|---|---|---|"]
        order = list(cfgs)
        for r in sorted(rows, key=lambda r: order.index(r["config"]) if r["config"] in order else 999):
            t = f"{r['calib_seconds']:.0f} s" if "calib_seconds" in r else "–"
            mem = f"{r['calib_peak_rss_mb']:.0f} MB" if "calib_peak_rss_mb" in r else "–"
            size = f"{r['file_ratio']:.3f}" if "file_ratio" in r else "–"
            label = cfgs[r["config"]][0] if r["config"] in cfgs else r["label"]  # the code's current name
            lines.append(f"| {label} | {r['bits']} | {r['top1']:.2f} | {t} | {mem} | {size} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
