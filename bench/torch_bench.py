#!/usr/bin/python3
"""PyTorch peer of `vitq bench`: forward latency of a timm-layout checkpoint directory through
the PyTorch reference model (tests/parity/ref_vit.py, RefViT) in eager mode under
torch.inference_mode(), FP32 or dynamic int8 (--int8: quantize_dynamic of every nn.Linear with
the onednn engine). Prints (and with --json writes) {"ms_per_batch": [...], ...}.

Thread pools: torch.set_num_threads(--threads). OpenBLAS sizes its own pool when it is loaded,
so the caller sets OPENBLAS_NUM_THREADS/OMP_NUM_THREADS too (run_speed.py does), and unsets
OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE for this process (see shared/docs/BENCHMARKING.md).
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402

from export_onnx import load_module  # noqa: E402


def build(model_dir, int8):
    model, dims = load_module(model_dir)
    if int8:
        torch.backends.quantized.engine = "onednn"
        model = torch.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return model, dims


def time_runs(model, x, warmup, iters):
    ms = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        for _ in range(iters):
            t0 = time.perf_counter()
            model(x)
            ms.append((time.perf_counter() - t0) * 1e3)
    return ms


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint directory (timm config.json + model.safetensors)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--int8", action="store_true", help="dynamic int8 (quantize_dynamic, onednn engine)")
    ap.add_argument("--json", help="also write the result here")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model, dims = build(a.model, a.int8)
    x = torch.randn(a.batch, dims.get("in_chans", 3), dims["img_size"], dims["img_size"])
    ms = time_runs(model, x, a.warmup, a.iters)
    result = {
        "engine": "pytorch", "version": torch.__version__, "precision": "int8-dynamic" if a.int8 else "fp32",
        "quantized_engine": torch.backends.quantized.engine if a.int8 else None,
        "model": a.model, "batch": a.batch, "threads": torch.get_num_threads(),
        "ms_per_batch": ms, "median_ms_per_image": sorted(ms)[len(ms) // 2] / a.batch,
    }
    text = json.dumps(result, indent=2)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
