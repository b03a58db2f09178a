"""Logits and site outputs of vitq's forward against an independent PyTorch forward
(torch.nn.functional, timm semantics; tests/parity/ref_vit.py), within 1e-4 of the largest
logit magnitude: random-weight DeiT-S and distilled DeiT-T, F16/BF16 checkpoints, the shared
ViT-Ti and CIFAR models, and Hugging Face-layout copies giving the same logits."""
import json
import os

import numpy as np
import torch

import common
import ref_vit

TOL = 1e-4


def save_checkpoint(dirname, sd, config, dtype="F32"):
    """A checkpoint directory: model.safetensors from sd (timm names, or to_hf's) and config.json."""
    os.makedirs(dirname, exist_ok=True)
    ref_vit.write_safetensors(os.path.join(dirname, "model.safetensors"), sd, dtype)
    with open(os.path.join(dirname, "config.json"), "w") as f:
        json.dump(config, f)


def to_hf(sd, depth):
    """timm names -> transformers ViTForImageClassification names (qkv split in three)."""
    out = {
        "vit.embeddings.cls_token": sd["cls_token"],
        "vit.embeddings.position_embeddings": sd["pos_embed"],
        "vit.embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
        "vit.embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        "vit.layernorm.weight": sd["norm.weight"], "vit.layernorm.bias": sd["norm.bias"],
        "classifier.weight": sd["head.weight"], "classifier.bias": sd["head.bias"],
    }
    for i in range(depth):
        t, h = f"blocks.{i}.", f"vit.encoder.layer.{i}."
        w, b = sd[t + "attn.qkv.weight"].chunk(3, 0), sd[t + "attn.qkv.bias"].chunk(3, 0)
        for j, n in enumerate(["query", "key", "value"]):
            out[h + f"attention.attention.{n}.weight"] = w[j]
            out[h + f"attention.attention.{n}.bias"] = b[j]
        out.update({
            h + "layernorm_before.weight": sd[t + "norm1.weight"], h + "layernorm_before.bias": sd[t + "norm1.bias"],
            h + "attention.output.dense.weight": sd[t + "attn.proj.weight"],
            h + "attention.output.dense.bias": sd[t + "attn.proj.bias"],
            h + "layernorm_after.weight": sd[t + "norm2.weight"], h + "layernorm_after.bias": sd[t + "norm2.bias"],
            h + "intermediate.dense.weight": sd[t + "mlp.fc1.weight"], h + "intermediate.dense.bias": sd[t + "mlp.fc1.bias"],
            h + "output.dense.weight": sd[t + "mlp.fc2.weight"], h + "output.dense.bias": sd[t + "mlp.fc2.bias"],
        })
    return out


def hf_config(dim, depth, heads, mlp, img, patch, classes, eps=None):
    c = {"model_type": "vit", "architectures": ["ViTForImageClassification"], "hidden_size": dim,
         "num_hidden_layers": depth, "num_attention_heads": heads, "intermediate_size": mlp,
         "image_size": img, "patch_size": patch, "num_channels": 3, "qkv_bias": True, "hidden_act": "gelu",
         "id2label": {str(i): f"class{i}" for i in range(classes)}}
    if eps is not None:
        c["layer_norm_eps"] = eps
    return c


def vitq_logits(args, tmp, model_dir, x, site=None, per_call=False):
    inp, out = os.path.join(tmp, "x.f32"), os.path.join(tmp, "y.f32")
    x.numpy().astype("<f4").tofile(inp)
    cmd = [args.probe, "forward", "--model", model_dir, "--input", inp, "--batch", x.shape[0], "--out", out]
    if site:
        cmd += ["--site", site]
    if per_call:
        cmd += ["--per-call-gemm"]
    common.run(cmd)
    return torch.from_numpy(np.fromfile(out, dtype="<f4"))


def compare(chk, name, got, ref):
    got = got.reshape(ref.shape)
    err = (got - ref).abs().max().item()
    bound = TOL * ref.abs().max().item()
    chk.check(err <= bound, f"{name}: max |vitq - torch| = {err:.3g}, bound {bound:.3g} "
                            f"(argmax agree {bool((got.argmax(-1) == ref.argmax(-1)).all())})")


def real_inputs(args, rel_dir, n, size, crop_pct, interp, mean, std, stride=37, with_paths=False):
    """n real images (every stride-th file, in sorted path order) preprocessed with PIL + torchvision
    (timm eval transform); with_paths: also their paths."""
    from PIL import Image
    import math
    import torchvision.transforms as T
    root = os.path.join(args.shared_dir, rel_dir)
    paths = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(root) for f in fs)[::stride][:n]
    mode = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}[interp]
    tf = T.Compose([T.Resize(math.floor(size / crop_pct), interpolation=mode), T.CenterCrop(size), T.ToTensor(),
                    T.Normalize(mean, std)])
    x = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths])
    return (x, paths) if with_paths else x


def main():
    args = common.parse_args()
    chk = common.Checker()
    torch.manual_seed(0)
    with common.tmpdir() as tmp:
        # 1. Random-weight DeiT-S and distilled DeiT-T (timm names from the architecture).
        cases = [
            ("deit_small_patch16_224", dict(embed_dim=384, depth=12, num_heads=6, mlp_hidden=1536), False),
            ("deit_tiny_distilled_patch16_224", dict(embed_dim=192, depth=12, num_heads=3, mlp_hidden=768), True),
        ]
        for arch, dims, distilled in cases:
            sd = ref_vit.random_vit_state_dict(num_classes=1000, distilled=distilled, seed=1, **dims)
            x = torch.randn(2, 3, 224, 224)
            ref = ref_vit.vit_forward(sd, dims["num_heads"], distilled=distilled)(x)
            d = os.path.join(tmp, arch)
            save_checkpoint(d, sd, {"architecture": arch, "num_classes": 1000})
            compare(chk, f"{arch} random weights, logits", vitq_logits(args, tmp, d, x), ref)

        # 2. Site outputs of the distilled DeiT-T: Q·Kᵀ (unscaled), softmax·V, fc1 of block 0.
        sd = ref_vit.random_vit_state_dict(192, 2, 3, 768, 10, distilled=True, seed=2)
        d = os.path.join(tmp, "sites")
        save_checkpoint(d, sd, {"architecture": "deit_tiny_distilled_patch16_224", "num_classes": 10,
                          "model_args": {"depth": 2}})
        x = torch.randn(2, 3, 224, 224)
        with torch.no_grad():
            y = torch.nn.functional.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=16)
            y = y.flatten(2).transpose(1, 2)
            y = torch.cat([sd["cls_token"].expand(2, -1, -1), sd["dist_token"].expand(2, -1, -1), y], 1) + sd["pos_embed"]
            h = torch.nn.functional.layer_norm(y, (192,), sd["blocks.0.norm1.weight"], sd["blocks.0.norm1.bias"], 1e-6)
            qkv = torch.nn.functional.linear(h, sd["blocks.0.attn.qkv.weight"], sd["blocks.0.attn.qkv.bias"])
            q, k, v = qkv.reshape(2, 198, 3, 3, 64).permute(2, 0, 3, 1, 4)
            s = q @ k.transpose(-2, -1)
            o = (s * 64 ** -0.5).softmax(-1) @ v
        compare(chk, "site blocks.0.attn.matmul_qk = Q·Kᵀ per (image, head)",
                vitq_logits(args, tmp, d, x, "blocks.0.attn.matmul_qk"), s)
        compare(chk, "site blocks.0.attn.matmul_av = softmax(QKᵀ/√d)·V per (image, head)",
                vitq_logits(args, tmp, d, x, "blocks.0.attn.matmul_av"), o)
        compare(chk, "site blocks.0.attn.qkv", vitq_logits(args, tmp, d, x, "blocks.0.attn.qkv"), qkv)

        # 3. F16 and BF16 checkpoints: vitq converts to F32 exactly, so the reference uses the
        #    rounded weights.
        sd = ref_vit.random_vit_state_dict(192, 3, 3, 768, 100, seed=3)
        for dt in ["F16", "BF16"]:
            d = os.path.join(tmp, dt)
            save_checkpoint(d, sd, {"architecture": "vit_tiny_patch16_224", "num_classes": 100,
                              "model_args": {"depth": 3}}, dtype=dt)
            rounded = ref_vit.read_safetensors(os.path.join(d, "model.safetensors"))
            x = torch.randn(1, 3, 224, 224)
            compare(chk, f"{dt} checkpoint", vitq_logits(args, tmp, d, x), ref_vit.vit_forward(rounded, 3)(x))

        # 4. Hugging Face layout, random weights, no layer_norm_eps (transformers default 1e-12).
        sd = ref_vit.random_vit_state_dict(192, 2, 3, 768, 10, seed=4)
        d = os.path.join(tmp, "hf_default_eps")
        save_checkpoint(d, to_hf(sd, 2), hf_config(192, 2, 3, 768, 224, 16, 10))
        x = torch.randn(2, 3, 224, 224)
        compare(chk, "HF layout (layer_norm_eps default 1e-12)", vitq_logits(args, tmp, d, x),
                ref_vit.vit_forward(sd, 3, eps=1e-12)(x))

        # 5. The shared models on real images, and an HF copy of the shared ViT-Ti. On 2 threads
        #    ViT-Ti's 4 images x 3 heads take the forward's per-group attention products and the
        #    CIFAR model's 8 x 4 its batched ones (vit_forward.cpp: batched from 16 groups).
        if common.shared_available(args, "models", "vit_tiny_patch16_224"):
            d = os.path.join(args.shared_dir, "models", "vit_tiny_patch16_224")
            sd = ref_vit.read_safetensors(os.path.join(d, "model.safetensors"))
            x = real_inputs(args, "data/imagenet-sample/dev", 4, 224, 0.9, "bicubic", (0.5,) * 3, (0.5,) * 3)
            ref = ref_vit.vit_forward(sd, 3)(x)
            compare(chk, "shared vit_tiny_patch16_224, 4 real images", vitq_logits(args, tmp, d, x), ref)
            h = os.path.join(tmp, "hf_vit_tiny")
            save_checkpoint(h, to_hf(sd, 12), hf_config(192, 12, 3, 768, 224, 16, 1000, eps=1e-6))
            compare(chk, "HF-layout copy of vit_tiny_patch16_224 (layer_norm_eps 1e-6)", vitq_logits(args, tmp, h, x), ref)
        if common.shared_available(args, "models", "vit_cifar10_patch4_32"):
            d = os.path.join(args.shared_dir, "models", "vit_cifar10_patch4_32")
            sd = ref_vit.read_safetensors(os.path.join(d, "model.safetensors"))
            x = real_inputs(args, "data/cifar10/dev", 8, 32, 1.0, "bilinear", (0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616))
            ref = ref_vit.vit_forward(sd, 4)(x)
            compare(chk, "shared vit_cifar10_patch4_32, 8 real images", vitq_logits(args, tmp, d, x), ref)
            compare(chk, "shared vit_cifar10_patch4_32, 8 real images, the calibration's per-call sgemm path",
                    vitq_logits(args, tmp, d, x, per_call=True), ref)
    chk.finish()


if __name__ == "__main__":
    main()
