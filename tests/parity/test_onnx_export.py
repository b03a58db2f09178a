"""`vitq export --onnx`: the FP32 graph passes the ONNX checker (Python onnx, full check with
shape inference) and ONNX Runtime (onnxruntime-node, bench/ort_bench.js) computes the logits of
the independent PyTorch reference (tests/parity/ref_vit.py) within 1e-4 of max |logit|, the
tolerance test_forward.py holds vitq's own forward to.

Cases: the bundled Fashion-MNIST model (batch 3 and batch 1: the batch dimension is symbolic),
a random-weight distilled DeiT (two heads), a Hugging Face-layout checkpoint, and the shared
ViT-Ti / CIFAR models on real images when ../shared is present. Plus the refusals: --onnx with
--plan (the QDQ export is not implemented yet) and --onnx together with -o (exit 2 each).

ONNX Runtime: bench/node_modules, else `npm ci --ignore-scripts` of bench/package-lock.json into
the build directory (node and the npm registry needed; skips with the reason otherwise).
Exit status: 0 pass, 1 fail, 77 skip."""
import json
import os
import shutil
import subprocess
import sys

try:
    import numpy as np
    import onnx
    import torch
except ImportError as e:  # pragma: no cover
    print(f"SKIP: needs numpy, onnx and torch ({e}); run with Debian's /usr/bin/python3")
    sys.exit(77)

import common
import ref_vit
from test_forward import hf_config, real_inputs, save_timm, to_hf

TOL = 1e-4


def ort_runtime(args):
    """The directory holding node_modules/onnxruntime-node, or (None, reason)."""
    bench = os.path.join(args.source_dir, "bench")
    if os.path.isdir(os.path.join(bench, "node_modules", "onnxruntime-node")):
        return bench, ""
    if not shutil.which("node") or not shutil.which("npm"):
        return None, "node and npm are not installed (ONNX Runtime runs through onnxruntime-node)"
    dest = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(args.probe))), "ort-node")
    if not os.path.isdir(os.path.join(dest, "node_modules", "onnxruntime-node")):
        os.makedirs(dest, exist_ok=True)
        for f in ("package.json", "package-lock.json"):
            shutil.copy(os.path.join(bench, f), dest)
        r = subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=dest,
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            return None, f"npm ci --ignore-scripts in {dest} failed: {r.stderr.strip()[-400:]}"
    return dest, ""


def ort_logits(args, ort_dir, onnx_path, x, tmp):
    inp, out = os.path.join(tmp, "ort_in.f32"), os.path.join(tmp, "ort_out.f32")
    x.numpy().astype("<f4").tofile(inp)
    env = dict(os.environ, NODE_PATH=os.path.join(ort_dir, "node_modules"))
    common.run(["node", os.path.join(args.source_dir, "bench", "ort_bench.js"), "--model", onnx_path, "--batch",
                x.shape[0], "--threads", 2, "--warmup", 0, "--iters", 1, "--input", inp, "--output", out], env=env)
    return torch.from_numpy(np.fromfile(out, dtype="<f4"))


def main():
    args = common.parse_args()
    chk = common.Checker()
    ort_dir, why = ort_runtime(args)
    if not ort_dir:
        print(f"SKIP: {why}")
        sys.exit(77)
    torch.manual_seed(0)
    with common.tmpdir() as tmp:
        def export_and_compare(name, model_dir, x, ref):
            path = os.path.join(tmp, name.replace(" ", "_").replace("/", "_") + ".onnx")
            common.run([args.vitq, "export", "--model", model_dir, "--onnx", path])
            try:
                onnx.checker.check_model(onnx.load(path), full_check=True)
                chk.check(True, f"{name}: the ONNX checker (full check, shape inference) accepts the export")
            except Exception as e:  # noqa: BLE001 - any checker failure is the test failing
                chk.check(False, f"{name}: the ONNX checker refuses the export: {e}")
            got = ort_logits(args, ort_dir, path, x, tmp).reshape(ref.shape)
            err = (got - ref).abs().max().item()
            bound = TOL * ref.abs().max().item()
            chk.check(err <= bound, f"{name}: max |ONNX Runtime - torch| = {err:.3g}, bound {bound:.3g} "
                                    f"(argmax agree {bool((got.argmax(-1) == ref.argmax(-1)).all())})")
            return path

        # 1. The bundled model; batch 3, then batch 1 on the same file (symbolic batch).
        d = os.path.join(args.source_dir, "models", "vit_fmnist_patch4_28")
        cfg = json.load(open(os.path.join(d, "config.json")))
        sd = ref_vit.read_safetensors(os.path.join(d, "model.safetensors"))
        heads = cfg.get("model_args", cfg).get("num_heads", 4)
        fwd = ref_vit.vit_forward(sd, heads)
        x = torch.randn(3, 1, 28, 28)
        export_and_compare("bundled vit_fmnist_patch4_28, batch 3", d, x, fwd(x))
        export_and_compare("bundled vit_fmnist_patch4_28, batch 1", d, x[:1], fwd(x[:1]))

        # 2. A distilled DeiT with random weights (two heads averaged), 2 blocks.
        sd = ref_vit.random_vit_state_dict(192, 2, 3, 768, 10, distilled=True, seed=5)
        d = os.path.join(tmp, "deit_distilled")
        save_timm(d, sd, {"architecture": "deit_tiny_distilled_patch16_224", "num_classes": 10,
                          "model_args": {"depth": 2}})
        x = torch.randn(2, 3, 224, 224)
        export_and_compare("random distilled DeiT-T (2 blocks)", d, x, ref_vit.vit_forward(sd, 3, distilled=True)(x))

        # 3. Hugging Face layout (layer_norm_eps 1e-12 by default).
        sd = ref_vit.random_vit_state_dict(192, 2, 3, 768, 10, seed=6)
        d = os.path.join(tmp, "hf")
        os.makedirs(d)
        ref_vit.write_safetensors(os.path.join(d, "model.safetensors"), to_hf(sd, 2))
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(hf_config(192, 2, 3, 768, 224, 16, 10), f)
        export_and_compare("Hugging Face layout", d, x, ref_vit.vit_forward(sd, 3, eps=1e-12)(x))

        # 4. The shared models on real images.
        if common.shared_available(args, "models", "vit_tiny_patch16_224"):
            d = os.path.join(args.shared_dir, "models", "vit_tiny_patch16_224")
            sd = ref_vit.read_safetensors(os.path.join(d, "model.safetensors"))
            x = real_inputs(args, "data/imagenet-sample/dev", 4, 224, 0.9, "bicubic", (0.5,) * 3, (0.5,) * 3)
            export_and_compare("shared vit_tiny_patch16_224, 4 real images", d, x, ref_vit.vit_forward(sd, 3)(x))
        if common.shared_available(args, "models", "vit_cifar10_patch4_32"):
            d = os.path.join(args.shared_dir, "models", "vit_cifar10_patch4_32")
            sd = ref_vit.read_safetensors(os.path.join(d, "model.safetensors"))
            x = real_inputs(args, "data/cifar10/dev", 8, 32, 1.0, "bilinear", (0.4914, 0.4822, 0.4465),
                            (0.247, 0.2435, 0.2616))
            export_and_compare("shared vit_cifar10_patch4_32, 8 real images", d, x, ref_vit.vit_forward(sd, 4)(x))

        # 5. Refusals, each a usage error (exit 2) naming the option.
        bundled = os.path.join(args.source_dir, "models", "vit_fmnist_patch4_28")
        plan = os.path.join(tmp, "plan.json")
        with open(plan, "w") as f:
            f.write("{}")
        for what, extra, needle in (("--onnx with --plan", ["--plan", plan], "--plan"),
                                    ("--onnx with -o", ["-o", os.path.join(tmp, "qdir")], "-o")):
            r = subprocess.run([args.vitq, "export", "--model", bundled, "--onnx", os.path.join(tmp, "x.onnx"), *extra],
                               capture_output=True, text=True)
            chk.check(r.returncode == 2 and needle in r.stderr and not os.path.exists(os.path.join(tmp, "x.onnx")),
                      f"{what}: exit {r.returncode} (want 2), message names {needle}, no file written")
    chk.finish()


if __name__ == "__main__":
    main()
