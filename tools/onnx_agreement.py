#!/usr/bin/python3
"""ONNX Runtime on vitq's ONNX export against vitq's simulation of the same plan, on the dev splits
of the shared models — the agreement table of docs/RESULTS.md ("ONNX export").

For each model and configuration: `vitq quantize` on the calibration split, `vitq export --onnx`
of the quantized model directory, then on the same preprocessed input tensors (PIL + torchvision,
the timm eval transform — the reference preprocessing of ../shared/README.md):
  * vitq's simulation of the plan (build/tests/vitq_probe forward --plan),
  * ONNX Runtime on the export (bench/ort_bench.js, onnxruntime-node, 2 threads),
  * the FP32 model (vitq_probe forward),
  * the simulation again with every site's output moved by one unit in the last place (up or
    down, from a fixed seed; vitq_probe forward --perturb-outputs): how often the plan's own top-1
    survives a difference smaller than two engines' rounding differences (ONNX Runtime's
    LayerNorm, softmax, erf and float summation orders differ from vitq's by a few ulps),
and reports the share of images where ONNX Runtime's top-1 equals the simulation's, that
sensitivity, both top-1 accuracies, and each one's agreement with FP32. With --results, replaces the block between
<!-- onnx:begin --> and <!-- onnx:end --> of that file.

  /usr/bin/python3 tools/onnx_agreement.py --build build --out bench/results/onnx_agreement.json \\
      --results docs/RESULTS.md

Needs ../shared, a build with tests (vitq_probe) and bench/node_modules (npm ci --ignore-scripts
in bench/); exits with a message otherwise.
"""
import argparse
import datetime
import json
import os
import sys
import tempfile
import time

from results_md import machine, replace_block, run

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "parity"))  # the reference preprocessing (test_forward.real_inputs)

MODELS = {
    "vit_ti": dict(label="ViT-Ti/16, ImageNet", model="models/vit_tiny_patch16_224",
                   calib="data/imagenet-sample/calib", dev="data/imagenet-sample/dev",
                   class_map="data/imagenet-sample/class_map.txt", size=224, crop=0.9, interp="bicubic",
                   mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    "cifar": dict(label="ViT CIFAR-10, patch 4", model="models/vit_cifar10_patch4_32",
                  calib="data/cifar10/calib", dev="data/cifar10/dev", class_map=None, size=32, crop=1.0,
                  interp="bilinear", mean=(0.4914, 0.4822, 0.4465), std=(0.247, 0.2435, 0.2616)),
}

CONFIGS = {  # name -> (label, vitq quantize arguments)
    "vitq-w8a8": ("vitq W8A8", ["--method", "vitq", "--bits", "8"]),
    "vitq-w6a6": ("vitq W6A6", ["--method", "vitq", "--bits", "6"]),
    "vitq-w4a4": ("vitq W4A4", ["--method", "vitq", "--bits", "4"]),
    "liu2021-w8a8": ("liu2021 W8A8", ["--method", "liu2021", "--bits", "8"]),
    "minmax-w8a8": ("minmax W8A8", ["--method", "minmax", "--bits", "8"]),
}


def inputs(shared, spec):
    """The dev images as one float32 NCHW array (the parity tests' PIL + torchvision transform) and
    their labels (the class folder's index in the class map, else in sorted folder order)."""
    import numpy as np
    from test_forward import real_inputs
    root = os.path.join(shared, spec["dev"])
    x, paths = real_inputs(argparse.Namespace(shared_dir=shared), spec["dev"], 10**9, spec["size"], spec["crop"],
                           spec["interp"], spec["mean"], spec["std"], stride=1, with_paths=True)
    if spec["class_map"]:
        with open(os.path.join(shared, spec["class_map"])) as f:
            index = {w.strip(): i for i, w in enumerate(f) if w.strip()}
    else:
        index = {c: i for i, c in enumerate(sorted(os.listdir(root)))}
    labels = [index[os.path.basename(os.path.dirname(p))] for p in paths]
    return x.numpy().astype("<f4"), np.array(labels)


def logits(cmd_for_chunk, x, tmp, chunk):
    """Runs cmd_for_chunk(input_path, n, output_path) over chunks of x; returns [N, classes]."""
    import numpy as np
    out = []
    for i in range(0, len(x), chunk):
        xi = x[i:i + chunk]
        inp, o = os.path.join(tmp, "in.f32"), os.path.join(tmp, "out.f32")
        xi.tofile(inp)
        cmd, env = cmd_for_chunk(inp, len(xi), o)
        run(cmd, env=env)
        out.append(np.fromfile(o, dtype="<f4").reshape(len(xi), -1))
    return np.concatenate(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--shared-dir", default=os.path.join(REPO, "..", "shared"))
    ap.add_argument("--models", default="vit_ti,cifar")
    ap.add_argument("--configs", default="vitq-w8a8,liu2021-w8a8,vitq-w6a6,vitq-w4a4")
    ap.add_argument("--calib-size", type=int, default=200)
    ap.add_argument("--out", help="JSON of the raw figures")
    ap.add_argument("--results", help="markdown file whose onnx block is replaced")
    args = ap.parse_args()
    import numpy as np
    vitq, probe = os.path.join(args.build, "vitq"), os.path.join(args.build, "tests", "vitq_probe")
    for p in (vitq, probe):
        if not os.path.exists(p):
            sys.exit(f"{p} not found: build vitq with its tests first")
    if not os.path.isdir(args.shared_dir):
        sys.exit(f"{args.shared_dir} not found: the shared models and data are needed")
    ort_dir = os.path.join(REPO, "bench", "node_modules")
    if not os.path.isdir(os.path.join(ort_dir, "onnxruntime-node")):
        sys.exit(f"{ort_dir}/onnxruntime-node not found: run `npm ci --ignore-scripts` in bench/")
    env_ort = dict(os.environ, NODE_PATH=ort_dir)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mk in args.models.split(","):
            spec = MODELS[mk]
            model = os.path.join(args.shared_dir, spec["model"])
            x, y = inputs(args.shared_dir, spec)
            chunk = 100 if spec["size"] > 64 else 1000
            print(f"{spec['label']}: {len(x)} dev images", flush=True)
            fp = logits(lambda i, n, o: ([probe, "forward", "--model", model, "--input", i, "--batch", n,
                                          "--out", o], None), x, tmp, chunk)
            for ck in args.configs.split(","):
                label, qargs = CONFIGS[ck]
                q = os.path.join(tmp, f"{mk}_{ck}")
                t0 = time.time()
                run([vitq, "quantize", "--model", model, "--calib", os.path.join(args.shared_dir, spec["calib"]),
                    "--calib-size", args.calib_size, "-o", q, "--force", "-q", *qargs])
                onnx_path = q + ".onnx"
                run([vitq, "export", "--model", q, "--onnx", onnx_path])
                plan = os.path.join(q, "plan.json")
                sim = logits(lambda i, n, o: ([probe, "forward", "--model", model, "--plan", plan, "--input", i,
                                               "--batch", n, "--out", o], None), x, tmp, chunk)
                sim_ulp = logits(lambda i, n, o: ([probe, "forward", "--model", model, "--plan", plan, "--input", i,
                                                   "--batch", n, "--out", o, "--perturb-outputs", 1], None),
                                 x, tmp, chunk)
                ort = logits(lambda i, n, o: (["node", os.path.join(REPO, "bench", "ort_bench.js"), "--model",
                                               onnx_path, "--batch", n, "--threads", 2, "--warmup", 0, "--iters", 1,
                                               "--input", i, "--output", o], env_ort), x, tmp, chunk)
                ps, po, pf = sim.argmax(1), ort.argmax(1), fp.argmax(1)
                row = dict(model=spec["label"], config=label, images=int(len(x)),
                           onnx_mb=round(os.path.getsize(onnx_path) / 2**20, 1),
                           ort_eq_sim=float((po == ps).mean()), sim_eq_sim_ulp=float((sim_ulp.argmax(1) == ps).mean()),
                           top1_sim=float((ps == y).mean()),
                           top1_ort=float((po == y).mean()), top1_fp32=float((pf == y).mean()),
                           sim_eq_fp32=float((ps == pf).mean()), ort_eq_fp32=float((po == pf).mean()),
                           logit_diff_mean=float(np.abs(ort - sim).mean()), seconds=round(time.time() - t0, 1))
                rows.append(row)
                print(f"  {label}: ORT = sim on {100 * row['ort_eq_sim']:.2f} % (sim = sim with 1-ulp site outputs on "
                      f"{100 * row['sim_eq_sim_ulp']:.2f} %), top-1 sim {100 * row['top1_sim']:.2f}"
                      f" ORT {100 * row['top1_ort']:.2f} (FP32 {100 * row['top1_fp32']:.2f}), "
                      f"agreement with FP32 sim {100 * row['sim_eq_fp32']:.2f} % ORT {100 * row['ort_eq_fp32']:.2f} %",
                      flush=True)
    stamp = f"{datetime.date.today().isoformat()}, {machine()}"
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"date": datetime.date.today().isoformat(), "machine": machine(),
                       "calib_size": args.calib_size, "rows": rows}, f, indent=1)
    lines = [f"Measured {stamp} (`tools/onnx_agreement.py`; {args.calib_size} calibration images; the model "
             "exported from the quantized model directory; ONNX Runtime 2 threads, default optimisation):", "",
             "| model | plan | images | ONNX Runtime top-1 = vitq simulation | simulation = simulation with every "
             "site output ± 1 ulp | top-1 simulation / ONNX Runtime (FP32) | agreement with FP32: simulation / ONNX Runtime | "
             "mean \\|logit diff\\| | file |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['config']} | {r['images']} | **{100 * r['ort_eq_sim']:.2f} %** | "
                     f"{100 * r['sim_eq_sim_ulp']:.2f} % | "
                     f"{100 * r['top1_sim']:.2f} / {100 * r['top1_ort']:.2f} ({100 * r['top1_fp32']:.2f}) | "
                     f"{100 * r['sim_eq_fp32']:.2f} / {100 * r['ort_eq_fp32']:.2f} % | {r['logit_diff_mean']:.3g} | "
                     f"{r['onnx_mb']} MB |")
    text = "\n".join(lines)
    print(text)
    if args.results:
        replace_block(args.results, "onnx", text)


if __name__ == "__main__":
    main()
