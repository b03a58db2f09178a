"""Independent PyTorch reference of the timm VisionTransformer forward (torch.nn.functional
only), used by the parity tests and by the speed benchmarks. Not imported by vitq itself.

Semantics follow timm's VisionTransformer: conv patch embedding, class token (+ distillation
token for distilled DeiT), learned position embedding added to all tokens, pre-norm blocks
(LayerNorm -> MHSA with fused qkv -> residual, LayerNorm -> MLP with exact-erf GELU ->
residual), final LayerNorm, linear head on the class token (distilled: mean of head and
head_dist on the class and distillation tokens).
"""
import json
import struct

import numpy as np
import torch
import torch.nn.functional as F


def read_safetensors(path):
    """Minimal safetensors reader (F32/F16/BF16) returning {name: torch.Tensor}."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        raw = data[b:e]
        if info["dtype"] == "F32":
            t = torch.from_numpy(np.frombuffer(raw, dtype="<f4").copy())
        elif info["dtype"] == "F16":
            t = torch.from_numpy(np.frombuffer(raw, dtype="<f2").astype(np.float32))
        elif info["dtype"] == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            t = torch.from_numpy(u.view(np.float32).copy())
        else:
            raise ValueError(f"unsupported dtype {info['dtype']}")
        out[name] = t.reshape(info["shape"])
    return out


def write_safetensors(path, tensors, dtype="F32"):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        a = tensors[name].detach().cpu().float().numpy()
        if dtype == "F32":
            raw = a.astype("<f4").tobytes()
        elif dtype == "F16":
            raw = a.astype("<f2").tobytes()
        elif dtype == "BF16":
            raw = (np.ascontiguousarray(a).view(np.uint32) >> 16).astype("<u2").tobytes()
        else:
            raise ValueError(dtype)
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blobs.append(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def vit_forward(sd, num_heads, eps=1e-6, distilled=False, patch_size=None, fc2_input=None, taps=None):
    """Returns a function images(B,C,H,W) -> logits(B,classes) for timm state dict sd.
    fc2_input: optional function applied to every block's GELU output before fc2 (a rotated
    model's online transform, tests/parity/test_rotation.py). taps: a list that receives every
    block's LayerNorm 1 and LayerNorm 2 inputs in order (tests/parity/test_synth_grad.py)."""
    pw = sd["patch_embed.proj.weight"]
    p = patch_size or pw.shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))

    def fwd(x):
        x = F.conv2d(x, pw, sd["patch_embed.proj.bias"], stride=p)
        x = x.flatten(2).transpose(1, 2)
        b = x.shape[0]
        toks = [sd["cls_token"].expand(b, -1, -1)]
        if distilled:
            toks.append(sd["dist_token"].expand(b, -1, -1))
        x = torch.cat(toks + [x], 1) + sd["pos_embed"]
        c = x.shape[-1]
        hd = c // num_heads
        for i in range(depth):
            pre = f"blocks.{i}."
            if taps is not None:
                taps.append(x)
            y = F.layer_norm(x, (c,), sd[pre + "norm1.weight"], sd[pre + "norm1.bias"], eps)
            qkv = F.linear(y, sd[pre + "attn.qkv.weight"], sd.get(pre + "attn.qkv.bias"))
            n = x.shape[1]
            qkv = qkv.reshape(b, n, 3, num_heads, hd).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            a = (q @ k.transpose(-2, -1)) * hd ** -0.5
            y = (a.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
            x = x + F.linear(y, sd[pre + "attn.proj.weight"], sd[pre + "attn.proj.bias"])
            if taps is not None:
                taps.append(x)
            y = F.layer_norm(x, (c,), sd[pre + "norm2.weight"], sd[pre + "norm2.bias"], eps)
            y = F.gelu(F.linear(y, sd[pre + "mlp.fc1.weight"], sd[pre + "mlp.fc1.bias"]))
            if fc2_input is not None:
                y = fc2_input(y)
            x = x + F.linear(y, sd[pre + "mlp.fc2.weight"], sd[pre + "mlp.fc2.bias"])
        x = F.layer_norm(x, (c,), sd["norm.weight"], sd["norm.bias"], eps)
        logits = F.linear(x[:, 0], sd["head.weight"], sd["head.bias"])
        if distilled:
            logits = (logits + F.linear(x[:, 1], sd["head_dist.weight"], sd["head_dist.bias"])) / 2
        return logits

    return fwd


def random_vit_state_dict(embed_dim, depth, num_heads, mlp_hidden, num_classes, img_size=224,
                          patch_size=16, in_chans=3, distilled=False, seed=0):
    """Random timm-named weights with realistic scales (LayerNorm near identity)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, std=0.02):
        return torch.randn(*shape, generator=g) * std

    n = (img_size // patch_size) ** 2 + (2 if distilled else 1)
    sd = {
        "patch_embed.proj.weight": rnd(embed_dim, in_chans, patch_size, patch_size, std=0.05),
        "patch_embed.proj.bias": rnd(embed_dim),
        "cls_token": rnd(1, 1, embed_dim, std=0.5),
        "pos_embed": rnd(1, n, embed_dim, std=0.5),
        "norm.weight": 1 + rnd(embed_dim, std=0.1),
        "norm.bias": rnd(embed_dim, std=0.1),
        "head.weight": rnd(num_classes, embed_dim, std=0.1),
        "head.bias": rnd(num_classes),
    }
    if distilled:
        sd["dist_token"] = rnd(1, 1, embed_dim, std=0.5)
        sd["head_dist.weight"] = rnd(num_classes, embed_dim, std=0.1)
        sd["head_dist.bias"] = rnd(num_classes)
    for i in range(depth):
        pre = f"blocks.{i}."
        sd.update({
            pre + "norm1.weight": 1 + rnd(embed_dim, std=0.1), pre + "norm1.bias": rnd(embed_dim, std=0.1),
            pre + "attn.qkv.weight": rnd(3 * embed_dim, embed_dim, std=embed_dim ** -0.5),
            pre + "attn.qkv.bias": rnd(3 * embed_dim),
            pre + "attn.proj.weight": rnd(embed_dim, embed_dim, std=embed_dim ** -0.5),
            pre + "attn.proj.bias": rnd(embed_dim),
            pre + "norm2.weight": 1 + rnd(embed_dim, std=0.1), pre + "norm2.bias": rnd(embed_dim, std=0.1),
            pre + "mlp.fc1.weight": rnd(mlp_hidden, embed_dim, std=embed_dim ** -0.5),
            pre + "mlp.fc1.bias": rnd(mlp_hidden),
            pre + "mlp.fc2.weight": rnd(embed_dim, mlp_hidden, std=mlp_hidden ** -0.5),
            pre + "mlp.fc2.bias": rnd(embed_dim),
        })
    return sd


# ---------------------------------------------------------------------------------------
# nn.Module form, for the speed benchmarks (bench/): torch.onnx.export traces modules, and
# torch.quantization.quantize_dynamic replaces nn.Linear modules. Same semantics and
# parameter names as vit_forward above, so load_state_dict takes a timm state dict as is.

TIMM_SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)}


def timm_dims(config):
    """Architecture of a timm config.json dict (named vit_/deit_ models, optionally overridden
    by model_args) as RefViT keyword arguments."""
    import re
    m = re.match(r"^(vit|deit)_(tiny|small|base|large)(_distilled)?_patch(\d+)_(\d+)$",
                 config.get("architecture", "").split(".")[0])
    dims = {}
    if m:
        dim, depth, heads = TIMM_SIZES[m.group(2)]
        dims = dict(embed_dim=dim, depth=depth, num_heads=heads, mlp_hidden=4 * dim,
                    distilled=bool(m.group(3)), patch_size=int(m.group(4)), img_size=int(m.group(5)))
    args = config.get("model_args", {})
    for k in ("embed_dim", "depth", "num_heads", "patch_size", "img_size", "in_chans", "distilled"):
        if k in args:
            dims[k] = args[k]
    if "embed_dim" in args or "mlp_ratio" in args:
        dims["mlp_hidden"] = int(dims["embed_dim"] * args.get("mlp_ratio", 4.0))
    if "embed_dim" not in dims:
        raise ValueError(f"config.json: architecture {config.get('architecture')!r} is not a timm ViT/DeiT name "
                         "and model_args does not describe it")
    dims["num_classes"] = config.get("num_classes", args.get("num_classes", 1000))
    return dims


class _Attention(torch.nn.Module):
    def __init__(self, dim, num_heads, qkv_bias):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = torch.nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        hd = c // self.num_heads
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = (q @ k.transpose(-2, -1)) * hd ** -0.5
        return self.proj((a.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c))


class _Mlp(torch.nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = torch.nn.Linear(dim, hidden)
        self.fc2 = torch.nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(torch.nn.Module):
    def __init__(self, dim, num_heads, mlp_hidden, eps, qkv_bias):
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(dim, eps=eps)
        self.attn = _Attention(dim, num_heads, qkv_bias)
        self.norm2 = torch.nn.LayerNorm(dim, eps=eps)
        self.mlp = _Mlp(dim, mlp_hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(torch.nn.Module):
    def __init__(self, in_chans, dim, patch_size):
        super().__init__()
        self.proj = torch.nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class RefViT(torch.nn.Module):
    """timm VisionTransformer forward as an nn.Module (see vit_forward for the semantics).
    RefViT(**timm_dims(config)).load_state_dict(state_dict) loads a timm checkpoint."""

    def __init__(self, embed_dim, depth, num_heads, mlp_hidden, num_classes, img_size=224, patch_size=16,
                 in_chans=3, distilled=False, eps=1e-6, qkv_bias=True):
        super().__init__()
        self.distilled = distilled
        n = (img_size // patch_size) ** 2 + (2 if distilled else 1)
        self.patch_embed = _PatchEmbed(in_chans, embed_dim, patch_size)
        self.cls_token = torch.nn.Parameter(torch.zeros(1, 1, embed_dim))
        if distilled:
            self.dist_token = torch.nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = torch.nn.Parameter(torch.zeros(1, n, embed_dim))
        self.blocks = torch.nn.ModuleList(
            [_Block(embed_dim, num_heads, mlp_hidden, eps, qkv_bias) for _ in range(depth)])
        self.norm = torch.nn.LayerNorm(embed_dim, eps=eps)
        self.head = torch.nn.Linear(embed_dim, num_classes)
        if distilled:
            self.head_dist = torch.nn.Linear(embed_dim, num_classes)

    def forward(self, images):
        x = self.patch_embed(images)
        b = x.shape[0]
        toks = [self.cls_token.expand(b, -1, -1)]
        if self.distilled:
            toks.append(self.dist_token.expand(b, -1, -1))
        x = torch.cat(toks + [x], 1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        logits = self.head(x[:, 0])
        if self.distilled:
            logits = (logits + self.head_dist(x[:, 1])) / 2
        return logits


def write_random_checkpoint(directory, arch, num_classes=1000):
    """A random-weight timm checkpoint dir (model.safetensors + config.json) of a timm
    architecture name, for speed and cost benchmarks."""
    import json
    import os
    os.makedirs(directory, exist_ok=True)
    config = {"architecture": arch, "num_classes": num_classes}
    dims = timm_dims(config)
    sd = random_vit_state_dict(dims["embed_dim"], dims["depth"], dims["num_heads"], dims["mlp_hidden"],
                               dims["num_classes"], dims["img_size"], dims["patch_size"],
                               distilled=dims["distilled"])
    write_safetensors(os.path.join(directory, "model.safetensors"), sd)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
