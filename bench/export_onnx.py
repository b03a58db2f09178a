#!/usr/bin/python3
"""Exports a timm-layout ViT checkpoint directory (config.json + model.safetensors) to ONNX,
through the PyTorch reference model (tests/parity/ref_vit.py, RefViT), and checks the file
with onnx.checker. Used by run_speed.py for the ONNX Runtime peer (bench/ort_bench.js).

Run with Debian's /usr/bin/python3 (torch 1.13, onnx 1.12).
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "parity"))

import onnx  # noqa: E402
import torch  # noqa: E402

import ref_vit  # noqa: E402

MAX_OPSET = 17  # the highest torch 1.13 exports (LayerNormalization is a single op from 17)


def load_module(model_dir):
    """RefViT with the checkpoint's weights, in eval mode, and its config dims."""
    with open(os.path.join(model_dir, "config.json")) as f:
        dims = ref_vit.timm_dims(json.load(f))
    model = ref_vit.RefViT(**dims)
    model.load_state_dict(ref_vit.read_safetensors(os.path.join(model_dir, "model.safetensors")))
    return model.eval(), dims


def export(model_dir, out_path, batch=None, opset=MAX_OPSET):
    """Writes out_path; batch None = dynamic batch axis, else a fixed batch size."""
    model, dims = load_module(model_dir)
    x = torch.zeros(batch or 1, dims.get("in_chans", 3), dims["img_size"], dims["img_size"])
    dynamic = None if batch else {"images": {0: "batch"}, "logits": {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(model, x, out_path, opset_version=opset, input_names=["images"],
                          output_names=["logits"], dynamic_axes=dynamic, do_constant_folding=True)
    onnx.checker.check_model(out_path)  # by path: also works for files over 2 GB
    return out_path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint directory (timm config.json + model.safetensors)")
    ap.add_argument("--out", required=True, help="ONNX file to write")
    ap.add_argument("--batch", type=int, default=None, help="fixed batch size (default: dynamic batch axis)")
    ap.add_argument("--opset", type=int, default=MAX_OPSET, choices=range(13, MAX_OPSET + 1), metavar="13..17",
                    help=f"ONNX opset (default {MAX_OPSET})")
    a = ap.parse_args()
    export(a.model, a.out, a.batch, a.opset)
    print(f"wrote {a.out} (opset {a.opset}, batch {a.batch or 'dynamic'}), onnx.checker passed")


if __name__ == "__main__":
    main()
