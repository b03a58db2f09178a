#!/usr/bin/python3
"""Checks that a refactor changed no plan: runs `vitq quantize --plan-only` with two vitq
binaries (e.g. a build of the previous commit and the current one) on the shared models and
compares plan.json and plan_codes.safetensors byte for byte.

  /usr/bin/python3 tools/compare_plans.py --ref /tmp/ref/vitq --new build/vitq --work /tmp/plans
  /usr/bin/python3 tools/compare_plans.py ... --only cifar      # the CIFAR configurations only

The configurations: every registered method at W8A8 and W6A6 on the CIFAR model, the grid and
transform options (--unsigned-softmax, --per-channel-weights, --smooth-ln, ablation switches,
mixed precision) on it, the vitq recipe at W4A4 (closed-form and a short reconstruction), and
minmax / liu2021 --fast at W8A8 on ViT-Ti. With --eval, the quantized models of EVAL_CONFIGS are
written too and run by `vitq eval` (integer, --simulate, and the FP32 checkpoint) on 64 dev images
with --reference, and exported as ONNX (and the FP32 checkpoint too); the results must be equal
apart from timings and paths, the ONNX files byte for byte. Needs ../shared (exit 77
with a message without it). Exit 1 if any plan or evaluation differs.
"""
import argparse
import filecmp
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED = os.path.join(os.path.dirname(REPO), "shared")

CIFAR = ["--model", f"{SHARED}/models/vit_cifar10_patch4_32", "--calib", f"{SHARED}/data/cifar10/calib"]
VIT_TI = ["--model", f"{SHARED}/models/vit_tiny_patch16_224", "--calib", f"{SHARED}/data/imagenet-sample/calib",
          "--class-map", f"{SHARED}/data/imagenet-sample/class_map.txt", "--calib-size", "200"]


def configs():
    c = {}
    for m in ("minmax", "percentile", "easyquant", "liu2021", "aciq", "lapq", "bitsplit"):
        for b in (8, 6):
            c[f"cifar-{m}-w{b}a{b}"] = CIFAR + ["--method", m, "--bits", str(b)]
    c["cifar-minmax-us-pc"] = CIFAR + ["--method", "minmax", "--bits", "6", "--unsigned-softmax", "--per-channel-weights"]
    c["cifar-percentile-ln"] = CIFAR + ["--method", "percentile", "--bits", "6", "--smooth-ln", "--percentile", "99.9"]
    c["cifar-liu2021-fast-us"] = CIFAR + ["--method", "liu2021", "--bits", "6", "--fast", "--unsigned-softmax"]
    c["cifar-liu2021-abl"] = CIFAR + ["--method", "liu2021", "--bits", "6", "--no-ranking", "--no-bias-correction",
                                      "--calib-inputs", "fp"]
    c["cifar-easyquant-fast"] = CIFAR + ["--method", "easyquant", "--bits", "6", "--fast", "--similarity", "mse"]
    c["cifar-aciq-abl"] = CIFAR + ["--method", "aciq", "--bits", "4", "--aciq-no-bit-alloc", "--aciq-dist", "laplace",
                                   "--unsigned-softmax"]
    c["cifar-lapq-nojoint"] = CIFAR + ["--method", "lapq", "--bits", "4", "--lapq-no-joint", "--lapq-p", "2,3"]
    c["cifar-bitsplit-liu"] = CIFAR + ["--method", "bitsplit", "--bits", "4", "--bitsplit-act", "liu2021", "--coarse-stride", "10"]
    c["cifar-liu2021-mp6"] = CIFAR + ["--method", "liu2021", "--mixed-precision", "6", "--fast"]
    c["cifar-vitq-w4a4"] = CIFAR + ["--method", "vitq", "--bits", "4"]
    c["cifar-vitq-recon"] = CIFAR + ["--method", "vitq", "--bits", "4", "--compensate", "reconstruct", "--recon-iters", "30"]
    c["vit_ti-minmax-w8a8"] = VIT_TI + ["--method", "minmax", "--bits", "8"]
    c["vit_ti-liu2021-fast-w8a8"] = VIT_TI + ["--method", "liu2021", "--bits", "8", "--fast"]
    return c


EVAL_CONFIGS = {"cifar-vitq-w4a4": "cifar10/dev", "cifar-vitq-recon": "cifar10/dev",
                "vit_ti-minmax-w8a8": "imagenet-sample/dev"}
TIMING_KEYS = ("seconds", "forward_seconds", "images_per_second", "model", "plan", "json")


def quantize(vitq, args, out, plan_only=True):
    cmd = [vitq, "quantize", *args, *(["--plan-only"] if plan_only else []), "-q", "--force", "-o", out]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}\n")
        return False
    return True


def evaluate(vitq, name, args, model_dir, out):
    """Every run of `vitq eval` the --eval stage compares: dict tag -> result JSON (timings dropped)."""
    fp = args[args.index("--model") + 1]
    data = os.path.join(SHARED, "data", EVAL_CONFIGS[name])
    runs = {"int": [model_dir], "sim": [model_dir, "--simulate"], "fp32": [fp]}
    res = {}
    for tag, extra in runs.items():
        j = os.path.join(out, f"{name}-{tag}.json")
        cmd = [vitq, "eval", "--model", *extra, "--data", data, "--limit", "64", "--reference", fp, "-q", "--json", j]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.stderr.write(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}\n")
            return None
        with open(j) as f:
            d = json.load(f)
        for k in TIMING_KEYS:
            d.pop(k, None)
        if isinstance(d.get("reference"), dict):
            for k in TIMING_KEYS:
                d["reference"].pop(k, None)
        res[tag] = d
    return res


def compare_evals(a, name, args):
    outs = {}
    for tag, vitq in (("ref", a.ref), ("new", a.new)):
        model = os.path.join(a.work, tag + "-models", name)
        if not quantize(vitq, args, model, plan_only=False):
            return False
        outs[tag] = evaluate(vitq, name, args, model, os.path.join(a.work, tag + "-models"))
        if outs[tag] is None:
            return False
    same = True
    for tag in outs["ref"]:
        if outs["ref"][tag] != outs["new"][tag]:
            same = False
            print(f"  eval {tag} differs")
    # The ONNX graphs of the quantized model and of the FP32 checkpoint, byte for byte.
    fp = args[args.index("--model") + 1]
    for src, what in ((None, "quantized"), (fp, "fp32")):
        files = []
        for tag, vitq in (("ref", a.ref), ("new", a.new)):
            f = os.path.join(a.work, tag + "-models", f"{name}-{what}.onnx")
            model = src or os.path.join(a.work, tag + "-models", name)
            r = subprocess.run([vitq, "export", "--model", model, "--onnx", f], capture_output=True, text=True)
            if r.returncode != 0:
                sys.stderr.write(f"export failed ({r.returncode}): {r.stderr[-2000:]}\n")
                return False
            files.append(f)
        if not filecmp.cmp(*files, shallow=False):
            same = False
            print(f"  ONNX export ({what}) differs")
    return same


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", required=True, help="vitq binary of the reference build")
    ap.add_argument("--new", help="vitq binary under test (without it: only the reference plans are made)")
    ap.add_argument("--reuse-ref", action="store_true",
                    help="keep reference plans already in --work (from an earlier run with the same --ref)")
    ap.add_argument("--work", required=True, help="scratch directory for the plans")
    ap.add_argument("--only", default="", help="run the configurations whose name contains this")
    ap.add_argument("--eval", action="store_true",
                    help="also write the quantized models of a few configurations and compare `vitq eval` results")
    a = ap.parse_args()
    if not os.path.isdir(SHARED):
        print(f"skipped: {SHARED} (the shared models) is absent")
        return 77
    differ = []
    for name, args in configs().items():
        if a.only not in name:
            continue
        t0 = time.time()
        ok = True
        outs = {}
        for tag, vitq in (("ref", a.ref), ("new", a.new)):
            outs[tag] = os.path.join(a.work, tag, name)
            os.makedirs(os.path.dirname(outs[tag]), exist_ok=True)
            if vitq is None or (tag == "ref" and a.reuse_ref and os.path.exists(os.path.join(outs[tag], "plan.json"))):
                continue
            ok = quantize(vitq, args, outs[tag]) and ok
        if not ok:
            differ.append(name)
            continue
        if a.new is None:
            print(f"made    {name} ({time.time() - t0:.0f} s)", flush=True)
            continue
        same = True
        for f in ("plan.json", "plan_codes.safetensors"):
            p, q = (os.path.join(outs[t], f) for t in ("ref", "new"))
            if os.path.exists(p) != os.path.exists(q) or (os.path.exists(p) and not filecmp.cmp(p, q, shallow=False)):
                same = False
                print(f"  {f} differs: {p} {q}")
        if same and a.eval and name in EVAL_CONFIGS:
            same = compare_evals(a, name, args)
        print(f"{'same   ' if same else 'DIFFERS'} {name} ({time.time() - t0:.0f} s)", flush=True)
        if not same:
            differ.append(name)
    if a.new is None:
        return 1 if differ else 0
    if differ:
        print(f"{len(differ)} configuration(s) differ or failed: {', '.join(differ)}")
        return 1
    print("all plans byte-identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
