#!/usr/bin/python3
"""Train vitq's bundled default model: a small timm-style ViT on Fashion-MNIST.

Run with Debian's PyTorch:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 tools/train_fashion_mnist.py
(needs Debian packages python3-torch and libopenblas0-pthread; without OpenBLAS, torch
falls back to the reference BLAS and training is ~8x slower)

Reads the IDX files of Debian's `dataset-fashion-mnist` package
(/usr/share/datasets/fashion-mnist) and writes, in timm's layout,
    models/vit_fmnist_patch4_28/model.safetensors   (float32, timm parameter names)
    models/vit_fmnist_patch4_28/config.json         (timm config with model_args)
The network is the standard pre-norm ViT (class token, learned position embedding,
LayerNorm eps 1e-6, exact-erf GELU, fused qkv) so that any timm-compatible loader
reads it. Training is deterministic for a given --seed and thread count.
"""
import argparse
import gzip
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DATA_DIR = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel mean/std (in [0,1])


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = (q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5
        x = (a.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, chans, dim, patch):
        super().__init__()
        self.proj = nn.Conv2d(chans, dim, patch, patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class ViT(nn.Module):
    def __init__(self, img, patch, chans, dim, depth, heads, mlp_ratio, classes):
        super().__init__()
        n = (img // patch) ** 2
        self.patch_embed = PatchEmbed(chans, dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, int(dim * mlp_ratio)) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])


def augment(x, gen):
    """Random horizontal flip and random 28x28 crop from a 2-pixel zero-padded image."""
    b = x.shape[0]
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    pad = F.pad(x, (2, 2, 2, 2))
    dx = torch.randint(0, 5, (b,), generator=gen)
    dy = torch.randint(0, 5, (b,), generator=gen)
    idx = torch.arange(28)
    rows = (dy[:, None] + idx[None, :])  # b x 28
    cols = (dx[:, None] + idx[None, :])
    bi = torch.arange(b)[:, None, None]
    return pad[:, 0][bi, rows[:, :, None], cols[:, None, :]].unsqueeze(1)


def save_safetensors(path, tensors):
    """Write a safetensors file (8-byte LE header length, JSON header, raw data)."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name].detach().cpu().numpy().astype("<f4"))
        data = arr.tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    header["__metadata__"] = {"format": "pt"}
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for blob in blobs:
            f.write(blob)


def evaluate(model, x, y, batch=1000):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    return 100.0 * correct / len(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "models", "vit_fmnist_patch4_28"))
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)

    def load(split):
        imgs = read_idx(os.path.join(DATA_DIR, f"{split}-images-idx3-ubyte.gz"))
        labels = read_idx(os.path.join(DATA_DIR, f"{split}-labels-idx1-ubyte.gz"))
        x = (torch.from_numpy(imgs.copy()).float().div(255.0).sub(MEAN).div(STD)).unsqueeze(1)
        return x, torch.from_numpy(labels.astype(np.int64))

    if not os.path.isdir(DATA_DIR):
        sys.exit(f"error: {DATA_DIR} not found; install Debian's dataset-fashion-mnist package")
    xtr, ytr = load("train")
    xte, yte = load("t10k")

    cfg = dict(img_size=28, patch_size=4, in_chans=1, embed_dim=64, depth=6, num_heads=4, mlp_ratio=2.0)
    model = ViT(cfg["img_size"], cfg["patch_size"], cfg["in_chans"], cfg["embed_dim"], cfg["depth"],
                cfg["num_heads"], cfg["mlp_ratio"], 10)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n and "token" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n and "token" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr)
    steps_per_epoch = len(xtr) // args.batch
    total = args.epochs * steps_per_epoch
    warmup = steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))))

    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        loss_sum = 0.0
        for s in range(steps_per_epoch):
            idx = perm[s * args.batch:(s + 1) * args.batch]
            xb = augment(xtr[idx] * STD + MEAN, gen).sub(MEAN).div(STD)
            loss = F.cross_entropy(model(xb), ytr[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item()
        acc = evaluate(model, xte, yte)
        print(f"epoch {epoch + 1}/{args.epochs}  loss {loss_sum / steps_per_epoch:.4f}  test top-1 {acc:.2f}  "
              f"({time.time() - t0:.0f} s)", flush=True)

    acc = evaluate(model, xte, yte)
    elapsed = time.time() - t0
    os.makedirs(args.out, exist_ok=True)
    save_safetensors(os.path.join(args.out, "model.safetensors"), model.state_dict())
    config = {
        "architecture": "vit_fmnist_patch4_28",
        "num_classes": 10,
        "num_features": cfg["embed_dim"],
        "global_pool": "token",
        "model_args": cfg,
        "pretrained_cfg": {
            "input_size": [1, 28, 28],
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "crop_mode": "center",
            "mean": [MEAN],
            "std": [STD],
            "num_classes": 10,
            "first_conv": "patch_embed.proj",
            "classifier": "head",
        },
        "training": {
            "script": "tools/train_fashion_mnist.py",
            "dataset": "Fashion-MNIST (Debian dataset-fashion-mnist), 60000 train / 10000 test",
            "epochs": args.epochs, "batch": args.batch, "lr": args.lr, "seed": args.seed,
            "threads": args.threads, "torch": torch.__version__,
            "test_top1": round(acc, 2), "train_seconds": round(elapsed),
        },
    }
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    print(f"saved {args.out}: test top-1 {acc:.2f} %, {elapsed:.0f} s")


if __name__ == "__main__":
    main()
