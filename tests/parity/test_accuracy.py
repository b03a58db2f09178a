"""End-to-end accuracy of `vitq eval` against the published FP32 references of the shared
models (../shared/README.md: reproduced "to the image") and, for the bundled Fashion-MNIST
model, against a PyTorch forward of the same checkpoint over the same test set computed here."""
import gzip
import json
import os
import struct

import numpy as np
import torch

import common
import ref_vit


def vitq_eval(args, tmp, model, data, *extra):
    out = os.path.join(tmp, "eval.json")
    common.run([args.vitq, "eval", "--model", model, "--data", data, "--quiet", "--json", out, *extra])
    with open(out) as f:
        return json.load(f)


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main():
    args = common.parse_args()
    chk = common.Checker()
    with common.tmpdir() as tmp:
        # The bundled model on Debian's Fashion-MNIST test split vs PyTorch on the same files.
        fm = "/usr/share/datasets/fashion-mnist"
        model = os.path.join(args.source_dir, "models", "vit_fmnist_patch4_28")
        if os.path.isdir(fm):
            cfg = json.load(open(os.path.join(model, "config.json")))
            pc = cfg["pretrained_cfg"]
            x = torch.from_numpy(read_idx(os.path.join(fm, "t10k-images-idx3-ubyte.gz")).astype(np.float32) / 255.0)
            x = ((x - pc["mean"][0]) / pc["std"][0]).unsqueeze(1)
            y = torch.from_numpy(read_idx(os.path.join(fm, "t10k-labels-idx1-ubyte.gz")).astype(np.int64))
            sd = ref_vit.read_safetensors(os.path.join(model, "model.safetensors"))
            fwd = ref_vit.vit_forward(sd, cfg["model_args"]["num_heads"])
            with torch.no_grad():
                ref = sum(int((fwd(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum()) for i in range(0, 10000, 1000))
            r = vitq_eval(args, tmp, model, fm)
            chk.check(r["images"] == 10000 and r["top1_correct"] == ref,
                      f"bundled model on Fashion-MNIST test: vitq {r['top1_correct']}/10000, PyTorch {ref}/10000")
        else:
            print(f"SKIPPED (bundled part): {fm} not found (Debian package dataset-fashion-mnist)")

        if common.shared_available(args, "models", "vit_tiny_patch16_224"):
            s = args.shared_dir
            r = vitq_eval(args, tmp, os.path.join(s, "models/vit_tiny_patch16_224"),
                          os.path.join(s, "data/imagenet-sample/dev"),
                          "--class-map", os.path.join(s, "data/imagenet-sample/class_map.txt"))
            chk.check(r["images"] == 400 and r["top1_correct"] == 332 and r["top5_correct"] == 385,
                      f"vit_tiny_patch16_224 on imagenet-sample/dev: top-1 {r['top1']:.2f} (ref 83.00), "
                      f"top-5 {r['top5']:.2f} (ref 96.25)")
            # The class map next to the data is found without --class-map.
            r2 = vitq_eval(args, tmp, os.path.join(s, "models/vit_tiny_patch16_224"),
                           os.path.join(s, "data/imagenet-sample/dev"))
            chk.check(r2["top1_correct"] == 332, f"class_map.txt auto-detected: top-1 {r2['top1']:.2f}")
        if common.shared_available(args, "models", "vit_cifar10_patch4_32"):
            s = args.shared_dir
            r = vitq_eval(args, tmp, os.path.join(s, "models/vit_cifar10_patch4_32"), os.path.join(s, "data/cifar10/dev"))
            chk.check(r["images"] == 5000 and r["top1_correct"] == 3489 and abs(r["top5"] - 97.52) < 0.01,
                      f"vit_cifar10_patch4_32 on cifar10/dev: top-1 {r['top1']:.2f} (ref 69.78), "
                      f"top-5 {r['top5']:.2f} (ref 97.52)")
    chk.finish()


if __name__ == "__main__":
    main()
