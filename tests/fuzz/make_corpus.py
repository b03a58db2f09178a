#!/usr/bin/env python3
"""Writes the seed corpora of the libFuzzer harnesses (tests/fuzz/fuzz_*.cpp) into OUT/<harness>/.

Seeds are small valid inputs of every kind each parser reads, made here (a tiny timm-layout ViT,
its plans and quantized model directories from `vitq quantize`, images from PIL, IDX files) and
the bundled model's config.json. Multi-file inputs are joined with the harnesses' separator
(fuzz_common.h kFileSeparator). Deterministic: the same vitq gives the same bytes.

usage: make_corpus.py --vitq build/vitq --source-dir . --out DIR
"""
import argparse
import gzip
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

SEP = b"\n--vitq-fuzz-next-file--\n"


def safetensors_bytes(tensors, metadata=None):
    """The safetensors encoding of {name: float32 array} (name order, header padded to 8)."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def tiny_model(d):
    """A 1-block ViT on 8x8 grey inputs (D 8, 2 heads, MLP 16, 3 classes), seeded weights."""
    rng = np.random.default_rng(0)
    D, P, C, T, F, K = 8, 4, 1, 5, 16, 3
    t = {"patch_embed.proj.weight": rng.normal(0, 0.3, (D, C, P, P)), "patch_embed.proj.bias": rng.normal(0, 0.1, D),
         "cls_token": rng.normal(0, 0.5, (1, 1, D)), "pos_embed": rng.normal(0, 0.2, (1, T, D)),
         "norm.weight": 1 + rng.normal(0, 0.1, D), "norm.bias": rng.normal(0, 0.1, D),
         "head.weight": rng.normal(0, 1.0, (K, D)), "head.bias": rng.normal(0, 0.1, K)}
    for name, shape in [("norm1", None), ("norm2", None)]:
        t[f"blocks.0.{name}.weight"] = 1 + rng.normal(0, 0.1, D)
        t[f"blocks.0.{name}.bias"] = rng.normal(0, 0.1, D)
    for name, (o, i) in {"attn.qkv": (3 * D, D), "attn.proj": (D, D), "mlp.fc1": (F, D), "mlp.fc2": (D, F)}.items():
        t[f"blocks.0.{name}.weight"] = rng.normal(0, 1 / np.sqrt(i), (o, i))
        t[f"blocks.0.{name}.bias"] = rng.normal(0, 0.1, o)
    cfg = {"architecture": "vit_fuzz_tiny", "num_classes": K, "global_pool": "token",
           "model_args": {"img_size": 8, "patch_size": P, "in_chans": C, "embed_dim": D, "depth": 1,
                          "num_heads": 2, "mlp_ratio": 2.0},
           "pretrained_cfg": {"input_size": [C, 8, 8], "interpolation": "bilinear", "crop_pct": 1.0,
                              "mean": [0.5], "std": [0.25], "num_classes": K}}
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(safetensors_bytes(t))


def idx_images(images):
    n, r, c = images.shape
    return struct.pack(">IIII", 0x00000803, n, r, c) + images.astype(np.uint8).tobytes()


def idx_labels(labels):
    return struct.pack(">II", 0x00000801, len(labels)) + np.asarray(labels, np.uint8).tobytes()


def read(p):
    with open(p, "rb") as f:
        return f.read()


def put(out, harness, name, data):
    os.makedirs(os.path.join(out, harness), exist_ok=True)
    with open(os.path.join(out, harness, name), "wb") as f:
        f.write(data)


def image_seeds():
    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 256, (11, 13, 3), dtype=np.uint8), "RGB")
    seeds = {}
    for mode in ["RGB", "L", "LA", "RGBA", "P", "1", "I;16"]:
        im = rgb.convert("L").convert(mode) if mode == "I;16" else rgb.convert(mode)
        b = io.BytesIO()
        im.save(b, "PNG")
        seeds[f"png_{mode.replace(';', '')}.png"] = b.getvalue()
    b = io.BytesIO()
    rgb.save(b, "PNG", optimize=True)
    seeds["png_optimized.png"] = b.getvalue()
    for mode, kw in [("RGB", {}), ("L", {}), ("RGB", {"progressive": True}), ("CMYK", {}),
                     ("RGB", {"subsampling": 0})]:
        b = io.BytesIO()
        rgb.convert(mode).save(b, "JPEG", quality=80, **kw)
        seeds[f"jpeg_{mode}_{'_'.join(kw) or 'base'}.jpg"] = b.getvalue()
    # The campaign's finding as regression seeds: extreme aspect ratios, whose PIL-exact resize is
    # far larger than the crop (1 x 4200 PNG: 5.3 s and 830 MB before the crop-window resize).
    for w, h, fmt in [(1, 4200, "PNG"), (4200, 1, "PNG"), (13, 3000, "JPEG")]:
        b = io.BytesIO()
        Image.fromarray((np.arange(w * h) % 251).astype(np.uint8).reshape(h, w)).convert("RGB").save(b, fmt)
        seeds[f"tall_{w}x{h}.{fmt.lower()}"] = b.getvalue()
    return seeds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vitq", required=True, help="a vitq binary (release build) to make plans and quantized models")
    ap.add_argument("--source-dir", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = a.out
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    work = tempfile.mkdtemp(prefix="vitq-corpus-")
    try:
        model = os.path.join(work, "tiny")
        tiny_model(model)
        rng = np.random.default_rng(2)
        calib = os.path.join(work, "calib")
        os.makedirs(calib)
        imgs = rng.integers(0, 256, (8, 8, 8))
        with open(os.path.join(calib, "train-images-idx3-ubyte"), "wb") as f:
            f.write(idx_images(imgs))
        runs = {"minmax_w8a8": ["--method", "minmax", "--bits", "8"],
                "vitq_w4a4": ["--method", "vitq", "--bits", "4"],
                "liu2021_w6a6": ["--method", "liu2021", "--bits", "6"]}
        for name, args in runs.items():
            for plan_only in (False, True):
                o = os.path.join(work, name + ("_plan" if plan_only else ""))
                cmd = [a.vitq, "quantize", "--model", model, "--calib", calib, "--calib-size", "8", "-o", o,
                       "--quiet"] + args + (["--plan-only"] if plan_only else [])
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode:
                    sys.exit(f"make_corpus: {' '.join(cmd)} failed ({r.returncode}):\n{r.stderr}")
        bundled = os.path.join(a.source_dir, "models", "vit_fmnist_patch4_28", "config.json")

        put(out, "safetensors", "tiny.safetensors", read(os.path.join(model, "model.safetensors")))
        put(out, "safetensors", "meta.safetensors", safetensors_bytes({"a": np.arange(6.0).reshape(2, 3)},
                                                                      {"format": "pt"}))
        for name in runs:
            put(out, "safetensors", f"{name}.safetensors", read(os.path.join(work, name, "model.safetensors")))

        put(out, "config", "bundled.json", read(bundled))
        put(out, "config", "tiny.json", read(os.path.join(model, "config.json")))
        hf = {"model_type": "vit", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 16, "image_size": 8, "patch_size": 4, "num_channels": 1,
              "layer_norm_eps": 1e-12, "hidden_act": "gelu", "qkv_bias": True,
              "id2label": {"0": "a", "1": "b", "2": "c"}}
        pre = {"do_resize": True, "size": {"height": 8, "width": 8}, "image_mean": [0.5], "image_std": [0.5],
               "do_normalize": True, "resample": 2}
        put(out, "config", "hf.json", json.dumps(hf).encode() + SEP + json.dumps(pre).encode())

        put(out, "model", "tiny", read(os.path.join(model, "config.json")) + SEP +
            read(os.path.join(model, "model.safetensors")))

        for name in runs:
            d = os.path.join(work, name + "_plan")
            parts = [read(os.path.join(d, "plan.json"))]
            for extra in ("plan_codes.safetensors", "plan_compensation.safetensors"):
                p = os.path.join(d, extra)
                parts.append(read(p) if os.path.exists(p) else b"")
            put(out, "plan", name, SEP.join(parts))
            q = os.path.join(work, name)
            put(out, "quantized_model", name, SEP.join(read(os.path.join(q, f)) for f in
                                                       ("config.json", "plan.json", "model.safetensors")))

        for name, data in image_seeds().items():
            put(out, "image", name, data)

        labels = idx_labels(rng.integers(0, 10, 4))
        images = idx_images(rng.integers(0, 256, (4, 5, 6)))
        put(out, "idx", "raw", images + SEP + labels)
        put(out, "idx", "gzip", gzip.compress(images, mtime=0) + SEP + gzip.compress(labels, mtime=0))
        put(out, "idx", "images_only", images)

        put(out, "class_map", "three", b"n01440764\nn01443537\n\nn01484850\r\n")
        put(out, "class_map", "one", b"  cat  \n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(out) for f in fs)
    print(f"make_corpus: {sum(len(fs) for _, _, fs in os.walk(out))} seeds, {total} bytes in {out}")


if __name__ == "__main__":
    sys.exit(main())
