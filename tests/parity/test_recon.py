"""Block reconstruction's gradients (src/quant/reconstruct.h) against torch.autograd.

The probe (recon_grad) runs one block of a quantized plan on a batch of block inputs and returns
the loss mean((block(x) − target)²), its gradients with respect to the four linear sites'
dequantized weights ŵ = Δ_c·q + o_c and biases, and the parameters it used (ŵ, the biases with
their corrections, the LayerNorms, the MLP rotation's signs). Here the same block is written in
torch from those parameters and plan.json's formats — per-token activation quantizers (Δ = (max −
min)/(2^b − 1) per row, zero on the grid), per-head uniform Q, K, V steps (or Q and K per token: each
row of a head its symmetric step max|x|/(2^(b−1) − 1), a run-time constant), the softmax output on
the unsigned grid, the MLP rotation h·H·diag(s)/√F (Sylvester H) — every quantizer passed
straight through (x + (q(x) − x).detach(), zero gradient where a uniform grid clips), and
torch.autograd gives the reference gradients. Checks: the block output and the loss agree
(float tolerance), and each gradient agrees within 1 % of its largest entry (a code can land on
the other side of a rounding tie between the two float computations). The plans have no QwT
compensation: reconstruction trains a block before its compensation is fitted."""
import json
import os

import numpy as np
import torch
import torch.nn.functional as F

import common


def per_token_fq(x, bits, clip=1.0, log_clip=None):
    """The row's range [clip·mn, clip·mx]; zero gradient outside it (clip < 1). log_clip (a leaf
    tensor, 0): the gradient of log clip, LSQ's step gradient through each row's step
    clip·(mx − mn)/(2^b − 1), the zero point independent of the clip."""
    mn = torch.clamp(x.amin(-1, keepdim=True), max=0) * clip
    mx = torch.clamp(x.amax(-1, keepdim=True), min=0) * clip
    step = (mx - mn) / float((1 << bits) - 1) * (1 + 2 ** -10)  # the tie-breaking stretch
    step = torch.where(step == 0, torch.ones_like(step), step)
    lo = torch.round(mn / step)
    inside = ((x >= mn) & (x <= mx)).to(x.dtype)
    c = torch.round(x / step)
    q = torch.clamp(c, lo, lo + (1 << bits) - 1) * step
    value = x * inside + (q - x * inside).detach()
    if log_clip is None:
        return value
    s = step.detach() * torch.exp(log_clip)  # the same step, as a function of log clip only
    ud = x.detach() / s
    lsq = torch.clamp(ud + (c - ud).detach(), lo, lo + (1 << bits) - 1) * s
    return value + lsq - lsq.detach()


def per_token_sym_fq(x, bits):
    """Q or K per token (vitq's recipe at <= 6 bits): each row of a head its symmetric step max|x| / (2^(b-1) − 1)
    (with the tie-breaking stretch), a run-time value the reconstruction treats as a constant (detached);
    the codes never clip (the row's largest |x| lands on the last code), so the gradient is straight through."""
    hi = (1 << (bits - 1)) - 1
    step = (torch.clamp(x.abs().amax(-1, keepdim=True), min=1e-12) / hi * (1 + 2 ** -10)).detach()
    q = torch.clamp(torch.round(x / step), -hi - 1, hi) * step
    return x + (q - x).detach()


def uniform_fq(x, step, lo, hi):
    """step broadcasts against x; zero gradient where the grid clips. With respect to the step,
    LSQ's: round(x/step) − x/step inside the grid, the end code outside (autograd through
    clamp(u + (round(u) − u).detach()) · step, u = x/step)."""
    u = x / step
    c = torch.round(u)
    inside = ((c >= lo) & (c <= hi)).to(x.dtype)
    q = torch.clamp(c, lo, hi) * step
    value = x * inside + (q - x * inside).detach()
    if not (isinstance(step, torch.Tensor) and step.requires_grad):
        return value
    ud = x.detach() / step  # the step's gradient only: x's is the straight-through one above
    lsq = torch.clamp(ud + (c - ud).detach(), lo, hi) * step
    return value + lsq - lsq.detach()


STEPS = {}  # (site kind, operand) -> the leaf tensor of its per-head steps in the last torch_block


def head_steps(op, heads, key=None):
    t = torch.tensor(op["head_scales"] if "head_scales" in op else [op["scale"]] * heads, dtype=torch.float32)
    if key:
        t.requires_grad_(True)
        STEPS[key] = t
    return t


def sylvester(n):
    h = np.array([[1.0]])
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return torch.tensor(h, dtype=torch.float32)


def torch_block(p, plan, blk, x, heads, eps, quant_acts=True):
    """quant_acts=False: every activation quantizer off (QDrop with p = 1), the weights as given."""
    s = plan["sites"]
    global per_token_fq, uniform_fq
    if not quant_acts:
        saved = per_token_fq, uniform_fq
        per_token_fq, uniform_fq = (lambda a, *_: a), (lambda a, *_: a)
        try:
            return torch_block(p, plan, blk, x, heads, eps)
        finally:
            per_token_fq, uniform_fq = saved
    name = lambda k: f"blocks.{blk}.{k}"
    lin = lambda k, a: F.linear(a, p[k + ".w"], p[k + ".b"])
    b, t, d = x.shape
    hd = d // heads

    def act(k, a):
        xq = s[name(k)]["x"]
        if xq.get("granularity") != "token":
            return a
        STEPS["clip." + k.split(".")[-1]] = lc = torch.zeros((), requires_grad=True)
        g = xq.get("token_group", a.shape[-1])  # channel groups: each its own row range
        ag = a.reshape(*a.shape[:-1], a.shape[-1] // g, g)
        return per_token_fq(ag, xq["bits"], xq.get("token_clip", 1.0), lc).reshape(a.shape)

    h = F.layer_norm(x, (d,), p["norm1.g"], p["norm1.b"], eps)
    qkv = lin("qkv", act("attn.qkv", h)).reshape(b, t, 3, heads, hd).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    qk, av = s[name("attn.matmul_qk")], s[name("attn.matmul_av")]
    bq = qk["x"]["bits"]

    def qk_fq(a, op, key):  # per head (trained step) or per token (run-time step) of each head's rows
        if op.get("granularity") == "token":
            return per_token_sym_fq(a, op["bits"])
        return uniform_fq(a, head_steps(op, heads, key).view(1, heads, 1, 1), -(1 << (bq - 1)), (1 << (bq - 1)) - 1)

    q, k = qk_fq(q, qk["x"], "q"), qk_fq(k, qk["w"], "k")
    a = (q @ k.transpose(-1, -2)) * hd ** -0.5
    pr = a.softmax(-1)
    ba = av["x"]["bits"]
    assert av["x"].get("unsigned"), "the test's plan quantizes the softmax output on the unsigned grid"
    pr = uniform_fq(pr, head_steps(av["x"], heads).view(1, heads, 1, 1), 0, (1 << ba) - 1)
    v = uniform_fq(v, head_steps(av["w"], heads, "v").view(1, heads, 1, 1), -(1 << (ba - 1)), (1 << (ba - 1)) - 1)
    o = (pr @ v).transpose(1, 2).reshape(b, t, d)
    x = x + lin("proj", act("attn.proj", o))
    h = F.gelu(lin("fc1", act("mlp.fc1", F.layer_norm(x, (d,), p["norm2.g"], p["norm2.b"], eps))))
    if "signs" in p:
        f = h.shape[-1]
        h = (h @ sylvester(f)) * p["signs"] / f ** 0.5
    return x + lin("fc2", act("mlp.fc2", h))


def main():
    args = common.parse_args()
    chk = common.Checker()
    model = os.path.join(args.source_dir, "models", "vit_fmnist_patch4_28")
    cfg = json.load(open(os.path.join(model, "config.json")))
    D, heads, T = 64, 4, 50
    with common.tmpdir() as tmp:
        for label, extra, cases in [("minmax W4A4, per-token, per-head, rotations",
                                     ["--method", "minmax", "--bits", "4", "--rotate", "--rotate-mlp"],
                                     ((0, 0.0), (1, 0.0), (0, 1.0))),
                                    # (6 bits: fewer codes on the other side of a tie than at 4; Q and K per head,
                                    # whose steps the reconstruction trains, except in the last case)
                                    ("vitq-style W6A6, per-token inputs clipped to 0.9 of the row range",
                                     ["--method", "vitq", "--bits", "6", "--softmax-grid", "unsigned", "--compensate",
                                      "none", "--token-clip", "0.9", "--no-per-token-qk"], ((0, 0.0), (1, 0.0))),
                                    ("vitq-style W6A6, per-token inputs in groups of 16 channels clipped to 0.9",
                                     ["--method", "vitq", "--bits", "6", "--softmax-grid", "unsigned", "--compensate",
                                      "none", "--token-clip", "0.9", "--token-group", "16", "--no-per-token-qk"], ((0, 0.0), (1, 0.0))),
                             ("vitq-style W6A6 grid (asymmetric per-channel GPTQ weights)",
                              ["--method", "vitq", "--bits", "6", "--softmax-grid", "unsigned", "--compensate", "none",
                               "--no-per-token-qk"],
                              ((0, 0.0), (1, 0.0), (0, 1.0))),
                             ("vitq W6A6 recipe: Q and K per token (run-time steps, not trained)",
                              ["--method", "vitq", "--bits", "6", "--softmax-grid", "unsigned", "--compensate", "none"],
                              ((0, 0.0), (1, 0.0)))]:
            qdir = os.path.join(tmp, f"plan{len(os.listdir(tmp))}")
            common.run([args.vitq, "quantize", "--model", model, "--random-calibration", "8", "--plan-only", "-q",
                        "-o", qdir, "--per-token", "--per-head", "--per-channel-weights", "--softmax-grid",
                        "unsigned", *extra] if extra[1] == "minmax" else
                       [args.vitq, "quantize", "--model", model, "--random-calibration", "8", "--plan-only", "-q",
                        "-o", qdir, *extra])
            plan = json.load(open(os.path.join(qdir, "plan.json")))
            rng = np.random.default_rng(3)
            for blk, drop in cases:
                n = 3
                x = rng.normal(0, 1, (n, T, D)).astype(np.float32)
                x[:, :, 5] *= 8  # an outlier channel
                tgt = (x + rng.normal(0, 0.5, x.shape)).astype(np.float32)
                xp, tp = os.path.join(tmp, "x.f32"), os.path.join(tmp, "t.f32")
                x.tofile(xp)
                tgt.tofile(tp)
                pre = os.path.join(tmp, "g")
                r = json.loads(common.run([args.probe, "recon_grad", "--model", model, "--plan",
                                           os.path.join(qdir, "plan.json"), "--block", blk, "--images", n, "--x", xp,
                                           "--target", tp, "--out", pre, "--drop", drop]))
                ld = lambda nm: torch.tensor(np.fromfile(f"{pre}.{nm}.f32", "<f4"))
                p = {}
                for k, (N, K) in {"qkv": (3 * D, D), "proj": (D, D), "fc1": (2 * D, D), "fc2": (D, 2 * D)}.items():
                    p[k + ".w"] = ld(k + ".w").reshape(N, K).requires_grad_(True)
                    p[k + ".b"] = ld(k + ".b").requires_grad_(True)
                for k in ("norm1.g", "norm1.b", "norm2.g", "norm2.b"):
                    p[k] = ld(k)
                if r["rotated_mlp"]:
                    p["signs"] = ld("signs")
                # QDrop with p = 1: every activation element keeps its float value, in the forward
                # and in the backward (no straight-through mask).
                name = f"{label}, block {blk}" + (", QDrop p = 1" if drop else "")
                STEPS.clear()
                out = torch_block(p, plan, blk, torch.tensor(x), heads, 1e-6, quant_acts=not drop)
                loss = ((out - torch.tensor(tgt)) ** 2).mean()
                loss.backward()
                vout = ld("out").reshape(out.shape)  # (the plan's output, without dropping)
                dout = (vout - out.detach()).abs()
                far = (dout > 1e-4 * out.abs().max()).float().mean().item()
                chk.check(drop or far <= 0.05, f"{name}: block output = torch's ({100 * far:.2f} % of the values differ by more "
                                       f"than 1e-4 of the largest: codes on the other side of a rounding tie)")
                chk.check(abs(r["loss"] - loss.item()) <= 1e-3 * loss.item(),
                          f"{name}: loss {r['loss']:.6g} = torch's {loss.item():.6g}")
                for k in ("qkv", "proj", "fc1", "fc2"):
                    for part in ("w", "b"):
                        ref = p[f"{k}.{part}"].grad
                        got = ld(f"{k}.d{part}").reshape(ref.shape)
                        diff = (got - ref).abs().max().item()
                        scale = ref.abs().max().item()
                        chk.check(diff <= 1e-2 * scale and scale > 0,
                                  f"{name}: d{k}.{part} = torch.autograd's (max diff {diff:.2e} of {scale:.2e})")
                # The clip ratios of the per-token inputs (LSQ through the row steps), a 4-vector
                # per block compared like the other gradients: within 1 % of its largest entry (a
                # code on the other side of a rounding tie moves one entry by one term Δ·∂L/∂x̂,
                # whatever the entry's size; the entries are sums of terms of both signs). Where
                # the two block outputs differ at ties (the 4-bit cases) they are reported only.
                got = {k: ld(f"{k}.dlogclip").item() for k in ("qkv", "proj", "fc1", "fc2")}
                ref = {k: STEPS[f"clip.{k}"].grad.item() for k in got if not drop and f"clip.{k}" in STEPS}
                for k in got:
                    if k not in ref:
                        chk.check(got[k] == 0, f"{name}: {k} dlogclip = 0 ({'nothing quantized' if drop else 'not per token'})")
                if ref and far > 0:
                    print(f"skip  {name}: dlogclip not compared ({100 * far:.2f} % of the outputs on other sides of "
                          f"rounding ties): {[f'{got[k]:.4g}' for k in ref]} here, {[f'{v:.4g}' for v in ref.values()]} torch")
                elif ref:
                    scale = max(abs(v) for v in ref.values())
                    diff = max(abs(got[k] - v) for k, v in ref.items())
                    chk.check(diff <= 1e-2 * scale and scale > 0,
                              f"{name}: dlogclip = torch.autograd's (max diff {diff:.2e} of {scale:.2e}; "
                              f"{[f'{got[k]:.6g}' for k in ref]} vs {[f'{v:.6g}' for v in ref.values()]})")
                # The per-head steps of Q, K, V (LSQ); with every activation left in float (QDrop
                # p = 1) they have no effect and the gradients must be zero, as they must for Q and K
                # per token (their steps are the rows' own, not trained).
                qk_site = plan["sites"][f"blocks.{blk}.attn.matmul_qk"]
                token = {"q": qk_site["x"].get("granularity") == "token", "k": qk_site["w"].get("granularity") == "token"}
                if "Q and K per token" in label:
                    chk.check(token["q"] and token["k"], f"{name}: the plan has Q and K per token")
                for k in ("q", "k", "v"):
                    got = ld(f"d{k}_step")
                    if drop or token.get(k):
                        why = "nothing is quantized" if drop else "per token"
                        chk.check(got.abs().max().item() == 0, f"{name}: d{k}_step = 0 ({why})")
                        continue
                    ref = STEPS[k].grad
                    diff = (got - ref).abs().max().item()
                    scale = ref.abs().max().item()
                    chk.check(diff <= 1e-2 * scale and scale > 0,
                              f"{name}: d{k}_step = torch.autograd's (max diff {diff:.2e} of {scale:.2e}; "
                              f"{got.numpy().round(6).tolist()} vs {ref.numpy().round(6).tolist()})")
    chk.finish()


if __name__ == "__main__":
    main()
