#!/usr/bin/python3
"""Speed of the quantization formats of `--method vitq` against vitq's plain W8A8, in one run.

On random-weight checkpoints (speed does not depend on the values), each configuration is
quantized once (`vitq quantize --random-calibration 4`) and timed with `vitq bench` (2 threads);
the configurations run interleaved (A B C ... A B C ...), the median of each process's timed
forwards is one repetition, and the table shows the median over repetitions with each row's
ratio to the plain W8A8 model of the same run. A second pass with --profile gives the time per
stage of the integer forward, to say where a format costs.

Configurations:
  fp32             the checkpoint, FP32
  w8a8             minmax --bits 8: per-tensor steps everywhere (vitq's W8A8 before the formats
                   of issue 14; what docs/RESULTS.md's speed tables measure)
  w8a8+token       the same with per-token inputs (--per-token)
  w8a8+float       the same with the small-float softmax grid (--softmax-grid float: P·V on
                   16-bit levels, two u8 planes)
  w8a8+mlprot      the same with the online MLP rotation (--rotate-mlp)
  vitq-w8a8        `--method vitq --bits 8` (its recipe: the three above but the rotation, per-head
                   steps, per-channel asymmetric weights)
  vitq-w4a4        `--method vitq --bits 4 --compensate none` (+ rotations; 4-bit weights run as
                   int8 GEMMs)
  vitq-w4a4-g64    the same with a step per 64 channels of each token row instead of per 32
                   (--token-group 64: half as many channel groups, the 6-bit recipe's size)
  vitq-w4a4-rows   the same with one step per token row instead of one per 32 channels of it
                   (--token-group 0: one integer GEMM per linear site instead of one per channel group)
  vitq-w4a4+qwt    the same with QwT error compensation (`--compensate closed-form`, the default at
                   W4A4: one FP32 D × D GEMM per block)
  w8a8+gelu        w8a8 with 8-bit GELU tables (--gelu-table 8: fc1's epilogue looks fc2's input
                   codes up instead of computing GELU and quantizing)
  vitq-w8a8+gelu   vitq-w8a8 with 8-bit GELU tables (per-token fc2 inputs: the table gives the GELU
                   values, which are then quantized per token)
  w8a8+tables      w8a8 with 8-bit GELU tables and an 8-bit softmax exponent table (--softmax-table 8)
  vitq-int8only    `--method vitq --bits 8 --target int8-only`: the recipe within static per-tensor
                   steps and a u8 softmax output
  vitq-int8only+tables  the same with 8-bit GELU and softmax tables (the fast format)
  vitq-w8a8-signed+tables  vitq's W8A8 formats (per-token inputs, per-head steps) with the signed
                   softmax grid (one P·V plane), no compensation, 8-bit GELU and softmax tables

  /usr/bin/python3 bench/recipe_speed.py --out bench/results/recipe-speed.json --results docs/RESULTS.md
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tools"))
from results_md import machine, replace_block  # noqa: E402
MODELS = {"vit_ti": ("vit_tiny_patch16_224", "ViT-Ti"), "deit_s": ("deit_small_patch16_224", "DeiT-S")}
CONFIGS = {
    "fp32": None,
    "w8a8": ["--method", "minmax", "--bits", "8"],
    "w8a8+token": ["--method", "minmax", "--bits", "8", "--per-token"],
    "w8a8+float": ["--method", "minmax", "--bits", "8", "--softmax-grid", "float"],
    "w8a8+mlprot": ["--method", "minmax", "--bits", "8", "--rotate-mlp"],
    "vitq-w8a8": ["--method", "vitq", "--bits", "8"],
    "vitq-w4a4": ["--method", "vitq", "--bits", "4", "--compensate", "none"],
    "vitq-w4a4-g64": ["--method", "vitq", "--bits", "4", "--compensate", "none", "--token-group", "64"],
    "vitq-w4a4-rows": ["--method", "vitq", "--bits", "4", "--compensate", "none", "--token-group", "0"],
    "vitq-w4a4+qwt": ["--method", "vitq", "--bits", "4", "--compensate", "closed-form"],
    "w8a8+gelu": ["--method", "minmax", "--bits", "8", "--gelu-table", "8"],
    "vitq-w8a8+gelu": ["--method", "vitq", "--bits", "8", "--gelu-table", "8"],
    "w8a8+tables": ["--method", "minmax", "--bits", "8", "--gelu-table", "8", "--softmax-table", "8"],
    "vitq-int8only": ["--method", "vitq", "--bits", "8", "--target", "int8-only"],
    "vitq-int8only+tables": ["--method", "vitq", "--bits", "8", "--target", "int8-only", "--gelu-table", "8",
                             "--softmax-table", "8"],
    # vitq's W8A8 formats with the paper's signed softmax grid (one P·V plane) and both tables: the
    # fastest configuration measured within a point of the best W8A8 accuracy on ViT-Ti (83.50 %)
    "vitq-w8a8-signed+tables": ["--method", "vitq", "--bits", "8", "--softmax-grid", "signed", "--compensate", "none",
                                "--gelu-table", "8", "--softmax-table", "8"],
}


def prepare(vitq, work, key, configs="all"):
    arch = MODELS[key][0]
    d = os.path.join(work, arch)
    if not os.path.exists(os.path.join(d, "model.safetensors")):
        sys.path.insert(0, os.path.join(REPO, "tests", "parity"))
        import ref_vit  # noqa: E402  (torch only here, not while measuring)
        ref_vit.write_random_checkpoint(d, arch)
    dirs = {}
    for name, q in CONFIGS.items():
        if configs != "all" and name not in ("fp32", "w8a8") and name not in configs.split(","):
            continue
        if q is None:
            dirs[name] = d
            continue
        out = os.path.join(work, f"{arch}-{name}")
        if not os.path.exists(os.path.join(out, "model.safetensors")):
            subprocess.run([vitq, "quantize", "--model", d, "--random-calibration", "4", "-o", out, "--force", "-q",
                            *q], check=True, stdout=subprocess.DEVNULL)
        dirs[name] = out
    return dirs


def bench(vitq, model, batch, iters, profile=False):
    out = os.path.join("/tmp", f"vitq_recipe_speed_{os.getpid()}.json")
    cmd = [vitq, "bench", "--model", model, "--batch", str(batch), "--threads", "2", "--warmup", "5", "--iters",
           str(iters), "--json", out] + (["--profile"] if profile else [])
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        j = json.load(f)
    os.remove(out)
    return j


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vitq", default=os.path.join(REPO, "build", "vitq"))
    ap.add_argument("--work-dir", default=os.path.join(REPO, "out", "recipe_speed"))
    ap.add_argument("--models", default="vit_ti,deit_s")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--configs", default="all", help="comma-separated configurations (fp32 and w8a8 always run)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--results", metavar="MD", help="replace the <!-- recipe-speed:begin/end --> block of this file")
    args = ap.parse_args()
    res = {"date": datetime.date.today().isoformat(), "machine": machine(), "rows": []}
    for mk in args.models.split(","):
        dirs = prepare(args.vitq, args.work_dir, mk, args.configs)
        for b in map(int, args.batches.split(",")):
            times = {n: [] for n in dirs}
            for _ in range(args.repeats):  # interleaved
                for n, d in dirs.items():
                    j = bench(args.vitq, d, b, args.iters)
                    times[n].append(statistics.median(j["ms_per_batch"]) / b)
            base = statistics.median(times["w8a8"])
            fp32 = statistics.median(times["fp32"])
            for n, d in dirs.items():
                prof = bench(args.vitq, d, b, args.iters, profile=True).get("profile_ms_per_image", {}) if n != "fp32" else {}
                med = statistics.median(times[n])
                row = dict(model=mk, batch=b, config=n, ms_per_image=med, spread=(max(times[n]) - min(times[n])) / med,
                           vs_w8a8=med / base, fp32_speedup=fp32 / med, profile=prof)
                res["rows"].append(row)
                print(f"{mk} b{b} {n:14s} {med:7.3f} ms/image  x{med / base:.2f} of w8a8  FP32 / this {fp32 / med:.2f}",
                      flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    if args.results:
        replace_block(args.results, "recipe-speed", table(res))


def table(res):
    lines = [f"Measured {res['date']} on {res['machine']}; `bench/recipe_speed.py`: random-weight models, `vitq bench` "
             "with 2 threads, configurations interleaved, median of 5 repetitions of 30 timed forwards; ratio to the "
             "plain W8A8 model (per-tensor steps) of the same run; FP32 ÷: vitq's FP32 forward's time over the "
             "row's. Stage columns: `vitq bench --profile` (ms/image; "
             "each linear stage includes its fused epilogue, attention includes the softmax and P·V).", ""]
    stages = ["embed", "qkv", "attention", "proj", "fc1", "fc2", "head", "compensation"]
    for mk, (_, label) in MODELS.items():
        for b in sorted({r["batch"] for r in res["rows"] if r["model"] == mk}):
            rows = [r for r in res["rows"] if r["model"] == mk and r["batch"] == b]
            lines += [f"**{label}, batch {b}**", "",
                      "| configuration | ms/image | ÷ W8A8 | FP32 ÷ | " + " | ".join(stages) + " |",
                      "|---|---|---|---|" + "---|" * len(stages)]
            for r in rows:
                st = " | ".join(f"{r['profile'][s]:.2f}" if s in r["profile"] else "–" for s in stages)
                lines.append(f"| {r['config']} | {r['ms_per_image']:.2f} ±{100 * r['spread'] / 2:.0f}% | "
                             f"{r['vs_w8a8']:.2f}× | {r['fp32_speedup']:.2f}× | {st} |")
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
