"""Rotated models (src/quant/rotation.h) against PyTorch: vitq's Hadamard matrices against an
independent construction, vitq's rotated weights against a dense float64 rotation written here
from the formulas (with the signs from a Python splitmix64), the rotated state dict run by the
torch reference forward (tests/parity/ref_vit.py) against the original model's logits, and vitq's
rotated logits against torch's — on a random distilled model, the bundled Fashion-MNIST model and,
when ../shared exists, the shared ViT-Ti on real images."""
import gzip
import json
import os

import numpy as np
import torch

import common
import ref_vit

TOL = 1e-4          # logits: |Δ| ≤ TOL·max|logit| (two float32 evaluations, as in test_forward.py)
WEIGHT_TOL = 1e-6   # rotated weights: both round the same float64 value to float32 (≈ 1 ulp)
MASK = (1 << 64) - 1


# --- the sign generator, written from its documentation in numerics/hadamard.h -------------------

def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return state, z ^ (z >> 31)


def random_signs(n, seed, stream):
    _, z = splitmix64(stream)
    state = seed ^ z
    out = np.empty(n)
    for j in range(n):
        state, v = splitmix64(state)
        out[j] = -1.0 if v >> 63 else 1.0
    return out


KIND = {"residual": 0, "qk": 1, "v": 2, "mlp": 3}


def rotation_signs(kind, n, seed, block=0):
    s = random_signs(n, seed, (KIND[kind] << 32) | block)
    if kind == "residual":
        s[0] = 1.0
    return s


# --- Hadamard matrices ------------------------------------------------------------------------

def sylvester(m):
    h = np.ones((1, 1))
    while h.shape[0] < m:
        h = np.kron(np.array([[1, 1], [1, -1]]), h)
    return h


def vitq_hadamard(args, tmp, n):
    out, fast = os.path.join(tmp, "h.i8"), os.path.join(tmp, "h.f32")
    common.run([args.probe, "hadamard", "--n", n, "--out", out, "--fast-out", fast])
    h = np.fromfile(out, dtype=np.int8).reshape(n, n).astype(np.float64)
    return h, np.fromfile(fast, dtype="<f4").reshape(n, n).astype(np.float64)


def check_hadamard(chk, args, tmp):
    """(c) Sylvester orders equal np.kron's; H_12 is a normalized Hadamard matrix; 12·2^k orders
    equal np.kron(H_12, Sylvester); H·Hᵀ = n·I; the fast transform of I gives H."""
    h12, _ = vitq_hadamard(args, tmp, 12)
    chk.check(np.array_equal(h12 @ h12.T, 12 * np.eye(12)) and (h12[0] == 1).all() and (h12[:, 0] == 1).all(),
              "H_12: H·Hᵀ = 12·I, first row and column +1")
    mats = {12: h12}
    for n in [1, 2, 4, 8, 16, 32, 64, 128, 256, 24, 48, 96, 192, 384, 768, 1536, 3072]:
        h, fast = vitq_hadamard(args, tmp, n)
        m = n if n & (n - 1) == 0 else n // 12
        indep = sylvester(n) if m == n else np.kron(h12, sylvester(m))
        ok = np.array_equal(h, indep) and np.array_equal(h @ h.T, n * np.eye(n)) and np.array_equal(fast, h)
        chk.check(ok, f"H_{n}: = {'Sylvester' if m == n else f'kron(H_12, Sylvester {m})'}, H·Hᵀ = {n}·I, "
                      "hadamard_rows(I) = H")
        mats[n] = h
    return mats


# --- the rotation, dense in float64 from the formulas of quant/rotation.h ----------------------

def rotate_reference(sd, heads, seed, mlp, hmat):
    """Residual + heads (+ MLP) rotation of a timm state dict; returns (state dict, fc2 input map M)."""
    sd = {k: v.double().clone() for k, v in sd.items()}
    D = sd["cls_token"].shape[-1]
    d = D // heads
    F = sd["blocks.0.mlp.fc1.weight"].shape[0]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    H = torch.from_numpy(hmat(D))
    Q = H @ torch.diag(torch.from_numpy(rotation_signs("residual", D, seed))) @ H.T / D
    CQ = (torch.eye(D, dtype=torch.float64) - 1.0 / D) @ Q   # x -> x·C·Q
    Hd = torch.from_numpy(hmat(d)) / d ** 0.5
    M = None
    if mlp:
        M = torch.from_numpy(hmat(F)) @ torch.diag(torch.from_numpy(rotation_signs("mlp", F, seed))) / F ** 0.5

    def writer(name):
        w = sd[name + ".weight"]
        sd[name + ".weight"] = (CQ.T @ w.reshape(D, -1)).reshape(w.shape)
        sd[name + ".bias"] = sd[name + ".bias"] @ CQ

    def reader(name, ln):
        w, g, b = sd[name + ".weight"], sd[ln + ".weight"], sd[ln + ".bias"]
        sd[name + ".bias"] = sd.get(name + ".bias", torch.zeros(w.shape[0], dtype=torch.float64)) + w @ b
        sd[name + ".weight"] = (w * g) @ Q

    writer("patch_embed.proj")
    for t in ("cls_token", "dist_token", "pos_embed"):
        if t in sd:
            sd[t] = sd[t] @ CQ
    for i in range(depth):
        p = f"blocks.{i}."
        reader(p + "attn.qkv", p + "norm1")
        reader(p + "mlp.fc1", p + "norm2")
        writer(p + "attn.proj")
        writer(p + "mlp.fc2")
        R = Hd @ torch.diag(torch.from_numpy(rotation_signs("qk", d, seed, i)))
        R2 = Hd @ torch.diag(torch.from_numpy(rotation_signs("v", d, seed, i)))
        w, b, wp = sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"], sd[p + "attn.proj.weight"]
        for h in range(heads):
            for part, r in ((0, R), (1, R), (2, R2)):
                rows = slice(part * D + h * d, part * D + (h + 1) * d)
                w[rows] = r.T @ w[rows]
                b[rows] = b[rows] @ r
            wp[:, h * d:(h + 1) * d] = wp[:, h * d:(h + 1) * d] @ R2
        if mlp:
            sd[p + "mlp.fc2.weight"] = sd[p + "mlp.fc2.weight"] @ M
    for name in ("head", "head_dist"):
        if name + ".weight" in sd:
            reader(name, "norm")
    for ln in [k[:-len(".weight")] for k in sd if k.endswith("norm1.weight") or k.endswith("norm2.weight")] + ["norm"]:
        sd[ln + ".weight"] = torch.ones(D, dtype=torch.float64)
        sd[ln + ".bias"] = torch.zeros(D, dtype=torch.float64)
    return {k: v.float() for k, v in sd.items()}, M


# --- one model --------------------------------------------------------------------------------

def vitq_rotate(args, tmp, model_dir, x, seed, mlp):
    inp, out, sdp = (os.path.join(tmp, f) for f in ("x.f32", "y.f32", "rot.safetensors"))
    x.numpy().astype("<f4").tofile(inp)
    cmd = [args.probe, "rotate", "--model", model_dir, "--input", inp, "--batch", x.shape[0], "--out", out,
           "--seed", seed, "--state-dict", sdp] + (["--mlp"] if mlp else [])
    common.run(cmd)
    return torch.from_numpy(np.fromfile(out, dtype="<f4")), ref_vit.read_safetensors(sdp)


def max_rel(got, ref):
    """max|got − ref| / max|ref| (the absolute error for an all-zero ref, e.g. a LayerNorm β)."""
    err, top = (got.reshape(ref.shape) - ref).abs().max().item(), ref.abs().max().item()
    return err / top if top > 0 else err


def check_model(chk, args, tmp, label, model_dir, sd, heads, distilled, x, hmat):
    ref = ref_vit.vit_forward(sd, heads, distilled=distilled)(x)
    inp, out = os.path.join(tmp, "x.f32"), os.path.join(tmp, "y.f32")
    x.numpy().astype("<f4").tofile(inp)
    common.run([args.probe, "forward", "--model", model_dir, "--input", inp, "--batch", x.shape[0], "--out", out])
    base = max_rel(torch.from_numpy(np.fromfile(out, dtype="<f4")), ref)
    chk.check(base <= TOL, f"{label}: the float32 noise floor, vitq(original) vs torch(original): {base:.2g}")
    for seed, mlp in ((0, False), (0, True), (11, True)):
        tag = f"{label}, seed {seed}, residual + heads{' + mlp' if mlp else ''}"
        got, rot = vitq_rotate(args, tmp, model_dir, x, seed, mlp)
        signs = rot.pop("mlp_rotation_signs", None)
        want, M = rotate_reference(sd, heads, seed, mlp, hmat)
        chk.check((signs is None) == (not mlp) and (signs is None or np.array_equal(
            signs.numpy(), rotation_signs("mlp", want["blocks.0.mlp.fc1.weight"].shape[0], seed))),
            f"{tag}: " + ("MLP signs = Python splitmix64's" if mlp else "no MLP signs"))
        chk.check(set(rot) == set(want), f"{tag}: the state dict's tensors")
        worst = max(max_rel(rot[k], want[k]) for k in want if k in rot)
        chk.check(worst <= WEIGHT_TOL, f"{tag}: weights = float64 reference rotation, worst max|Δ|/max|w| {worst:.2g}")
        fc2_input = (lambda y: y @ M.float()) if mlp else None
        torch_rot = ref_vit.vit_forward(rot, heads, distilled=distilled, fc2_input=fc2_input)(x)
        e_a, e_b = max_rel(torch_rot, ref), max_rel(got, torch_rot)
        chk.check(e_a <= TOL, f"{tag}: (a) torch(rotated) vs torch(original): max|Δ|/max|logit| {e_a:.2g} "
                              f"(max|logit| {ref.abs().max().item():.3g})")
        chk.check(e_b <= TOL, f"{tag}: (b) vitq(rotated) vs torch(rotated): {e_b:.2g}; "
                              f"vitq(rotated) vs torch(original): {max_rel(got, ref):.2g}")


def fashion_mnist(n):
    path = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
    if not os.path.exists(path):
        print(f"(bundled model on random inputs: {path} not installed)")
        return torch.randn(n, 1, 28, 28)
    with gzip.open(path) as f:
        pix = np.frombuffer(f.read()[16:], dtype=np.uint8).reshape(-1, 28, 28)[:n]
    return torch.from_numpy((pix / 255.0 - 0.286) / 0.353).float().unsqueeze(1)


def main():
    args = common.parse_args()
    chk = common.Checker()
    torch.manual_seed(0)
    with common.tmpdir() as tmp:
        mats = check_hadamard(chk, args, tmp)

        def hmat(n):
            return mats[n] if n in mats else vitq_hadamard(args, tmp, n)[0]

        # 1. A random distilled model (dist_token, head_dist), D = 192, 3 heads, MLP 768.
        sd = ref_vit.random_vit_state_dict(192, 2, 3, 768, 10, img_size=64, distilled=True, seed=5)
        d = os.path.join(tmp, "distilled")
        os.makedirs(d)
        ref_vit.write_safetensors(os.path.join(d, "model.safetensors"), sd)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({"architecture": "deit_tiny_distilled_patch16_224", "num_classes": 10,
                       "model_args": {"depth": 2, "img_size": 64}}, f)
        check_model(chk, args, tmp, "random distilled DeiT-T (2 blocks)", d, sd, 3, True, torch.randn(3, 3, 64, 64), hmat)

        # 2. The bundled Fashion-MNIST model (D = 64, 4 heads of 16, MLP 128) on 8 test images.
        d = os.path.join(args.source_dir, "models", "vit_fmnist_patch4_28")
        sd = ref_vit.read_safetensors(os.path.join(d, "model.safetensors"))
        check_model(chk, args, tmp, "bundled vit_fmnist_patch4_28", d, sd, 4, False, fashion_mnist(8), hmat)

        # 3. The shared ViT-Ti (D = 192 = 12·16, heads of 64, MLP 768 = 12·64) on 4 real images.
        if common.shared_available(args, "models", "vit_tiny_patch16_224"):
            import test_forward
            d = os.path.join(args.shared_dir, "models", "vit_tiny_patch16_224")
            sd = ref_vit.read_safetensors(os.path.join(d, "model.safetensors"))
            x = test_forward.real_inputs(args, "data/imagenet-sample/dev", 4, 224, 0.9, "bicubic", (0.5,) * 3, (0.5,) * 3)
            check_model(chk, args, tmp, "shared vit_tiny_patch16_224", d, sd, 3, False, x, hmat)
    chk.finish()


if __name__ == "__main__":
    main()
