#!/usr/bin/python3
"""vitq's recipe and its ablation — the table of docs/RESULTS.md between <!-- ablation:begin -->
and <!-- ablation:end -->.

For each model (the shared ViT-Ti and CIFAR ViT) and bit-width (W8A8, W6A6, W4A4):
  base        `vitq` with every recipe part off: per-channel asymmetric MSE weights, per-tensor MSE
              activation steps, the paper's signed softmax grid, the patch input at the same bits
  + X         the base plus one part X alone
  recipe − X  the recipe without part X
  recipe      the recipe's formats without error compensation (`--compensate none`; the parts
              above are all measured without it)
and the error compensation on top of the recipe's formats (the <!-- compensation:begin/end -->
table, --compensation):
  none        = the recipe row
  ridge       ERQ-style ridge update of each linear site (--ridge-update)
  qwt         QwT per-block compensation (--compensate closed-form: `--method vitq` at W6/W4 as a
              user runs it)
  ridge+qwt   both
  recon       block reconstruction alone (--recon-iters N, no QwT)
  recon+qwt   --compensate reconstruct
  X:tg0, X:tg64, X:qkhead   level X without a recipe part of the low widths: one step per token
              row, a step per 64 channels (at 4 bits), one Q and one K step per head (at 6 bits and fewer)
Each row: `vitq quantize` on the calibration split (--calib-size, default 200 images), the
quantized model directory evaluated in integers on the dev split with --reference (the FP32
checkpoint on the same images): top-1, agreement with FP32's top-1, mean KL(p_FP32 || p), and
calibration time and file size. For the recipe rows also the simulated run of the same
directory: its predictions must equal the integer run's.

  /usr/bin/python3 tools/run_ablation.py --out bench/results/ablation.json --results docs/RESULTS.md
  /usr/bin/python3 tools/run_ablation.py --models cifar --bits 4 --out /tmp/a.json

Needs ../shared (models and data); exits with a message if it is absent. Resumes from --out.
"""
import argparse
import datetime
import json
import os
import sys
import time

from results_md import load_results, machine, replace_block, run, save_results

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

MODELS = {
    "vit_ti": dict(label="ViT-Ti/16 (augreg, ImageNet)", model="models/vit_tiny_patch16_224",
                   calib="data/imagenet-sample/calib", dev="data/imagenet-sample/dev",
                   class_map="data/imagenet-sample/class_map.txt"),
    "cifar": dict(label="ViT CIFAR-10 (patch 4)", model="models/vit_cifar10_patch4_32",
                  calib="data/cifar10/calib", dev="data/cifar10/dev", class_map=None),
}

# The recipe's parts: name -> (row label, the flags that switch it on, the flags that switch it off).
PARTS = {
    "per_token": ("per-token inputs", ["--per-token"], ["--no-per-token"]),
    "float_softmax": ("small-float softmax grid", ["--softmax-grid", "float"], ["--softmax-grid", "signed"]),
    "patch8": ("8-bit patch input", ["--patch-embed-abits", "8"], None),  # off: --patch-embed-abits B
    "per_head": ("per-head steps", [], ["--vitq-no-per-head"]),
    "gptq": ("GPTQ weights", ["--weight-rounding", "gptq"], ["--weight-rounding", "nearest"]),
    "rotate": ("rotation", ["--rotate"], ["--no-rotate"]),
    "rotate_mlp": ("MLP rotation", ["--rotate-mlp"], ["--no-rotate-mlp"]),
    "token_clip": ("token ranges clipped to 0.95", ["--token-clip", "0.95"], ["--token-clip", "1"]),
}
# Parts that do nothing alone (the clip ratio is of per-token inputs): no "base + X" row; their
# "recipe without X" row only where the recipe uses them (token_clip: 4-bit activations).
NOT_ALONE = {"token_clip"}
RECIPE_BITS = {"token_clip": (4,)}
# Parts measured alone that the recipe does not use.
EXTRA = {"log2_softmax": ("log2 softmax grid", ["--softmax-grid", "log2"]),
         "logsqrt2_softmax": ("log√2 softmax grid", ["--softmax-grid", "logsqrt2"]),
         "ln_reparam": ("LayerNorm reparameterisation (RepQ-ViT, median target)", ["--ln-reparam"])}

# The recipe with one part exchanged for an alternative.
SWAPS = {"logsqrt2_softmax": ("the log√2 softmax grid instead of the small-float one", ["--softmax-grid", "logsqrt2"])}


def off(part, bits):
    return PARTS[part][2] if PARTS[part][2] is not None else ["--patch-embed-abits", str(bits)]


def configs(bits):
    """name -> (label, vitq quantize arguments)"""
    base = ["--method", "vitq", "--bits", str(bits)]
    all_off = [f for p in PARTS for f in off(p, bits)]
    c = {"base": ("base: per-channel MSE weights, per-tensor MSE activations", base + all_off)}
    for p, (label, on, _) in PARTS.items():
        if p in NOT_ALONE:
            continue
        rest = [f for q in PARTS if q != p for f in off(q, bits)]
        c[f"+{p}"] = (f"base + {label}", base + rest + on)
    for p, (label, flags) in EXTRA.items():
        rest = [f for q in PARTS if q != "float_softmax" or not p.endswith("_softmax") for f in off(q, bits)]
        c[f"+{p}"] = (f"base + {label}", base + rest + flags)
    for p, (label, _, _) in PARTS.items():
        if bits in RECIPE_BITS.get(p, (bits,)):
            c[f"-{p}"] = (f"recipe without {label}", base + off(p, bits))
    for p, (label, flags) in SWAPS.items():
        c[f"~{p}"] = (f"recipe with {label}", base + flags)
    c["recipe"] = ("**recipe formats** (`--method vitq --compensate none`)", base)
    return {k: (label, args + ["--compensate", "none"]) for k, (label, args) in c.items()}


RECON_ITERS = 500  # --compensate reconstruct's (src/quant/methods/vitq.cpp: kReconIters)


def comp_configs(bits):
    """name -> (label, vitq quantize arguments): the error compensation on the recipe's formats."""
    base = ["--method", "vitq", "--bits", str(bits)]
    c = {
        "comp:none": ("no compensation (`--compensate none`)", base + ["--compensate", "none"]),
        "comp:ridge": ("ridge update (`--ridge-update`)", base + ["--compensate", "none", "--ridge-update"]),
        "comp:qwt": ("**closed-form**: QwT (`--compensate closed-form`)", base + ["--compensate", "closed-form"]),
        "comp:ridge+qwt": ("ridge update + QwT", base + ["--compensate", "closed-form", "--ridge-update"]),
        "comp:recon": (f"block reconstruction alone ({RECON_ITERS} steps/block)",
                       base + ["--compensate", "none", "--recon-iters", str(RECON_ITERS)]),
        "comp:recon+qwt:hs0": ("reconstruction + QwT, the whole last block alike (`--recon-head-share 0`)",
                               base + ["--compensate", "reconstruct", "--recon-head-share", "0"]),
        "comp:recon+qwt": ("**reconstruct**: reconstruction + QwT (`--compensate reconstruct`)",
                           base + ["--compensate", "reconstruct"]),
    }
    if bits > 4:  # the head share is in the recipe at 4-bit activations only
        del c["comp:recon+qwt:hs0"]
    # Each level also without a recipe part of the low widths, in groups of (name suffix, label,
    # arguments); the groups in this order, each level by level (the tables' row order):
    groups = []
    if bits <= 6:  # the per-token channel groups are in the recipe at 6 bits and fewer
        groups.append([(":tg0", "one step per token row (`--token-group 0`)", ["--token-group", "0"])])
        if bits <= 4:  # groups of 32 there; 64 is the 6-bit recipe's
            groups[-1].append((":tg64", "a step per 64 channels (`--token-group 64`)", ["--token-group", "64"]))
        # per-token Q and K are in the recipe at 6-bit activations and fewer
        groups.append([(":qkhead", "one Q and one K step per head (`--no-per-token-qk`)", ["--no-per-token-qk"])])
    for group in groups:
        for k in ("comp:none", "comp:qwt", "comp:recon+qwt"):
            label, qargs = c[k]
            for suffix, what, extra in group:
                c[k + suffix] = (label.replace("**", "") + ", " + what, qargs + extra)
    return c


def evaluate(args, model, m, cm, qdir, json_path, *extra):
    run([args.vitq, "eval", "--model", qdir, "--data", os.path.join(args.shared_dir, m["dev"]), *cm, "--threads",
         args.threads, "--quiet", "--json", json_path, *extra])
    with open(json_path) as f:
        return json.load(f)


def quantize_and_evaluate(args, mk, out, qargs, calib=None):
    """`vitq quantize` of model mk on its calibration split (--calib-size, --threads) into out, then
    the quantized directory run in integers on the dev split with --reference (eval_integer.json).
    calib: another calibration directory (read whole, its own class map). Returns (the row's common
    fields, report.json, the eval JSON, quantize's stdout)."""
    m = MODELS[mk]
    model = os.path.join(args.shared_dir, m["model"])
    cm = ["--class-map", os.path.join(args.shared_dir, m["class_map"])] if m["class_map"] else []
    source = ["--calib", calib, "--calib-size", 0] if calib else \
        ["--calib", os.path.join(args.shared_dir, m["calib"]), *cm, "--calib-size", args.calib_size]
    log = run([args.vitq, "quantize", "--model", model, *source, "--threads", args.threads, "-o", out, "--force",
               *qargs])
    with open(os.path.join(out, "report.json")) as f:
        rep = json.load(f)
    e = evaluate(args, model, m, cm, out, os.path.join(out, "eval_integer.json"), "--reference", model)
    row = dict(model=mk, date=datetime.date.today().isoformat(), top1=e["top1"], images=e["images"],
               agreement=e["reference"]["agreement"], kl=e["reference"]["kl_mean"], calib_seconds=rep["seconds"],
               calib_images=rep["calibration"]["images"],
               file_ratio=os.path.getsize(os.path.join(out, "model.safetensors")) /
               os.path.getsize(os.path.join(model, "model.safetensors")))
    return row, rep, e, log


def measure(args, mk, bits, name, qargs):
    m = MODELS[mk]
    model = os.path.join(args.shared_dir, m["model"])
    cm = ["--class-map", os.path.join(args.shared_dir, m["class_map"])] if m["class_map"] else []
    out = os.path.join(args.work_dir, mk, f"w{bits}a{bits}", name.replace("+", "plus_").replace("-", "minus_").replace("~", "swap_"))
    common, rep, e, _ = quantize_and_evaluate(args, mk, out, ["--quiet", *qargs])
    row = dict(model=mk, bits=bits, config=name, **{k: v for k, v in common.items() if k != "model"},
               calib_peak_rss_mb=rep["peak_rss_mb"], integer_images_per_second=e["images_per_second"])
    recon = [v["reconstruction"]["seconds"] for v in rep.get("block_step", {}).values() if "reconstruction" in v]
    if recon:
        row.update(recon_seconds_per_block=sum(recon) / len(recon))
    if name == "recipe" or name.startswith("comp:"):
        s = evaluate(args, model, m, cm, out, os.path.join(out, "eval_simulated.json"), "--simulate")
        row.update(simulated_top1=s["top1"],
                   same_predictions=sum(a == b for a, b in zip(e["predictions"], s["predictions"])))
    return row


def measured(rows):
    """The dates of the rows, as one date or a range."""
    d = sorted({r.get("date", "?") for r in rows})
    return d[0] if len(d) == 1 else f"{d[0]} to {d[-1]}"


def table(results):
    rows_all = [r for r in results.values() if r["config"] != "fp32" and not r["config"].startswith("comp:")]
    lines = [f"Measured {measured(rows_all)} on {machine()}; `tools/run_ablation.py`. The quantized "
             "model directory run **in integers** on the dev split; agreement = share of images with the FP32 "
             "model's top-1 class, KL = mean KL(p_FP32 ‖ p) (both paired, far less noisy than top-1: 400 ViT-Ti dev "
             "images give top-1 about ±1.9 points of standard error). Calibration: `vitq quantize` with 2 threads "
             "on unlabelled `calib` images; file = the quantized `model.safetensors` ÷ the FP32 checkpoint. "
             "Classifier head FP32.", ""]
    for mk, m in MODELS.items():
        rows = [r for r in results.values() if r["model"] == mk]
        if not rows:
            continue
        ncal = sorted({r["calib_images"] for r in rows if r["config"] != "fp32"})
        dev = max(r["images"] for r in rows)
        fp = results.get(f"{mk}/fp32")
        lines += [f"**{m['label']}** — calibration: {', '.join(map(str, ncal))} images; dev: {dev} images"
                  + (f"; FP32 top-1 {fp['top1']:.2f}" if fp else ""), ""]
        for bits in (8, 6, 4):
            br = [r for r in rows if r["bits"] == bits and r["config"] in configs(bits)]
            if not br:
                continue
            lines += [f"W{bits}A{bits}:", "", "| configuration | top-1 | agreement | KL | calib. | file ÷ FP32 |",
                      "|---|---|---|---|---|---|"]
            order = list(configs(bits))
            for r in sorted(br, key=lambda r: order.index(r["config"])):
                label = configs(bits)[r["config"]][0]
                extra = ""
                if "same_predictions" in r:
                    extra = f" (simulated: {r['simulated_top1']:.2f}, same predictions {r['same_predictions']}/{r['images']})"
                lines.append(f"| {label}{extra} | {r['top1']:.2f} | {r['agreement']:.2f} | {r['kl']:.4f} | "
                             f"{r['calib_seconds']:.0f} s | {r['file_ratio']:.3f} |")
            lines.append("")
    return "\n".join(lines)


def comp_table(results):
    rows_all = [r for r in results.values() if r["config"].startswith("comp:")]
    lines = [f"Measured {measured(rows_all)} on {machine()}; `tools/run_ablation.py --compensation`: "
             "the error compensation on top of the recipe's formats, each row's quantized model directory run in "
             "integers on the dev split (and simulated: same predictions); columns as in the ablation above; "
             "reconstruction time per block in the last column.", ""]
    for mk, m in MODELS.items():
        rows = [r for r in results.values() if r["model"] == mk and r["config"].startswith("comp:")]
        if not rows:
            continue
        fp = results.get(f"{mk}/fp32")
        ncal = sorted({r["calib_images"] for r in rows})
        lines += [f"**{m['label']}** — calibration: {', '.join(map(str, ncal))} images"
                  + (f"; FP32 top-1 {fp['top1']:.2f}" if fp else ""), ""]
        for bits in (8, 6, 4):
            br = [r for r in rows if r["bits"] == bits]
            if not br:
                continue
            order = list(comp_configs(bits))
            lines += [f"W{bits}A{bits}:", "", "| compensation | top-1 | agreement | KL | calib. | per block | "
                      "integer = simulated |", "|---|---|---|---|---|---|---|"]
            for r in sorted(br, key=lambda r: order.index(r["config"])):
                pb = f"{r['recon_seconds_per_block']:.0f} s" if "recon_seconds_per_block" in r else "–"
                same = f"{r['same_predictions']}/{r['images']}" if "same_predictions" in r else "–"
                lines.append(f"| {comp_configs(bits)[r['config']][0]} | {r['top1']:.2f} | {r['agreement']:.2f} | "
                             f"{r['kl']:.4f} | {r['calib_seconds']:.0f} s | {pb} | {same} |")
            lines.append("")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared-dir", default=os.path.join(REPO, "..", "shared"))
    ap.add_argument("--vitq", default=os.path.join(REPO, "build", "vitq"))
    ap.add_argument("--work-dir", default=os.path.join(REPO, "out", "ablation"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--bits", default="8,6,4")
    ap.add_argument("--configs", default="all", help="comma-separated config names (base, +gptq, -rotate, recipe, ...)")
    ap.add_argument("--compensation", action="store_true",
                    help="measure the error-compensation configurations (comp:none, comp:qwt, ...) instead of the "
                         "ablation of the formats")
    ap.add_argument("--block", default="compensation",
                    help="with --compensation: the <!-- NAME:begin/end --> block of --results to replace")
    ap.add_argument("--calib-size", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True, help="results JSON (also read to resume: finished rows are kept)")
    ap.add_argument("--results", metavar="MD", help="replace the <!-- ablation:begin/end --> block of this file")
    args = ap.parse_args()
    if not os.path.isdir(args.shared_dir):
        sys.exit(f"run_ablation: {args.shared_dir} not found (the shared models and data are needed)")
    results = load_results(args.out)
    for mk in args.models.split(","):
        m = MODELS[mk]
        model = os.path.join(args.shared_dir, m["model"])
        cm = ["--class-map", os.path.join(args.shared_dir, m["class_map"])] if m["class_map"] else []
        if f"{mk}/fp32" not in results:
            ev = os.path.join(args.work_dir, mk, "fp32.json")
            os.makedirs(os.path.dirname(ev), exist_ok=True)
            e = evaluate(args, model, m, cm, model, ev)
            results[f"{mk}/fp32"] = dict(model=mk, bits=32, config="fp32", top1=e["top1"], images=e["images"],
                                         calib_images=0)
        for bits in map(int, args.bits.split(",")):
            for name, (label, qargs) in (comp_configs(bits) if args.compensation else configs(bits)).items():
                key = f"{mk}/w{bits}a{bits}/{name}"
                if key in results or (args.configs != "all" and name not in args.configs.split(",")):
                    continue
                t0 = time.time()
                results[key] = measure(args, mk, bits, name, qargs)
                r = results[key]
                print(f"{key:34s} top-1 {r['top1']:6.2f} agree {r['agreement']:6.2f} KL {r['kl']:.4f} "
                      f"({time.time() - t0:.0f} s)", flush=True)
                save(args, results)
    save(args, results)
    if args.results and not args.compensation:
        replace_block(args.results, "ablation", table(results))
    if args.results and args.compensation:
        replace_block(args.results, args.block, comp_table(results))


def save(args, results):
    save_results(args.out, results, date=datetime.date.today().isoformat(), calib_size=args.calib_size)


if __name__ == "__main__":
    main()
