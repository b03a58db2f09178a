"""GPTQ rounding against a PyTorch float64 GPTQ written here from the paper.

Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers", Algorithm 1 with lazy batch updates: dead inputs (H_kk = 0) get H_kk = 1 and
zero weights; optional act-order (columns by descending H_kk); λ = 0.01 · mean(diag H);
U = upper Cholesky factor of (H + λI)⁻¹ (torch.linalg.cholesky, cholesky_inverse); per column
q = code(w), err = (w − ŵ) / U_ii, the block's later columns −= err · U_i,·, the later blocks by
one product per block. The grid (per-channel step and offset) is the one the probe fitted, so
only the rounding algorithm is compared; the code rule is vitq's documented one,
q = clip(round(float32(w − o) / Δ)), ŵ = Δ·q + o.

Checks per case: RTN codes equal torch's exactly; the fitted grid is the best of the 51 clipping
ratios by a numpy brute force; GPTQ codes agree on ≥ 99.5 % of the entries and the weighted
output errors Σ_c eᵀHe within 1 %; GPTQ's error is below RTN's."""
import json
import os

import numpy as np

import common

try:
    import torch
except ImportError:
    torch = None


def problem(n, k, seed, dead=False):
    rng = np.random.default_rng(seed)
    m = 4 * k
    a = np.eye(k) + rng.normal(0, 1.5 / np.sqrt(k), (k, k))
    x = (rng.normal(0, 1, (m, k)) @ a).astype(np.float32)
    x[:, 1] *= 8
    x[:, k // 2] *= 8
    if dead:
        x[:, 7] = 0         # H_77 = 0: a dead input
        x[:, 9] = x[:, 5]   # duplicate inputs: H singular
    w = rng.normal(0, 0.05, (n, k)).astype(np.float32)
    w[::5, 3] *= 6
    x64 = x.astype(np.float64)
    return w, x64.T @ x64 / m


def codes_of(w, step, off, bits):
    """vitq's code rule in torch: clip(round(float32(w − o) / Δ)), round half to even."""
    q = torch.round((w - off.double()).float() / step)
    return torch.clamp(q, -(1 << (bits - 1)), (1 << (bits - 1)) - 1).double()


def gptq_ref(w, h, step, off, bits, block, act_order, damp=0.01):
    w, h = w.clone(), h.clone()
    k = w.shape[1]
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    perm = torch.arange(k)
    if act_order:
        perm = torch.argsort(torch.diag(h), descending=True, stable=True)
        w, h = w[:, perm], h[perm][:, perm]
    h += damp * torch.mean(torch.diag(h)) * torch.eye(k, dtype=torch.float64)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q = torch.zeros_like(w)
    s64, o64 = step.double(), off.double()
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1 = w[:, i1:i2].clone()
        err = torch.zeros_like(w1)
        for i in range(i2 - i1):
            c = codes_of(w1[:, i], step, off, bits)
            q[:, i1 + i] = c
            e = (w1[:, i] - (s64 * c + o64)) / u[i1 + i, i1 + i]
            w1[:, i:] -= e[:, None] * u[i1 + i, i1 + i:i2][None, :]
            err[:, i] = e
        w[:, i2:] -= err @ u[i1:i2, i2:]
    return q[:, torch.argsort(perm)].long()


def out_error(w, codes, step, off, h):
    e = w.double() - (step.double()[:, None] * codes.double() + off.double()[:, None])
    return float(((e @ h) * e).sum())


def brute_force_grid_errors(w, d, bits):
    """Per channel: the weighted rounding error of the best of the 51 ratios (numpy)."""
    mn, mx = w.min(1).astype(np.float64), w.max(1).astype(np.float64)
    best = np.full(w.shape[0], np.inf)
    for i in range(51):
        r = (100 - i) / 100.0
        lo, hi = r * mn, r * mx
        s = ((hi - lo) / ((1 << bits) - 1)).astype(np.float32)
        o = (lo + s.astype(np.float64) * (1 << (bits - 1))).astype(np.float32)
        q = np.clip(np.rint((w.astype(np.float64) - o[:, None]).astype(np.float32) / s[:, None]),
                    -(1 << (bits - 1)), (1 << (bits - 1)) - 1)
        e = ((s[:, None].astype(np.float64) * q + o[:, None] - w) ** 2 * d).sum(1)
        best = np.minimum(best, e)
    return best


def grid_errors(w, d, step, off, bits):
    q = np.clip(np.rint((w.astype(np.float64) - off[:, None]).astype(np.float32) / step[:, None]),
                -(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return ((step[:, None].astype(np.float64) * q + off[:, None] - w) ** 2 * d).sum(1)


def main():
    args = common.parse_args()
    if torch is None:
        print("SKIPPED: torch is not installed")
        raise SystemExit(common.SKIP)
    torch.set_num_threads(2)
    chk = common.Checker()
    cases = [  # n, k, bits, block, act_order, dead inputs
        (96, 64, 3, 24, False, False), (96, 64, 3, 24, True, False), (96, 64, 4, 24, True, True),
        (48, 200, 2, 128, False, False), (192, 768, 4, 100, False, False), (192, 768, 3, 100, True, False),
    ]
    with common.tmpdir() as tmp:
        for n, k, bits, block, act, dead in cases:
            name = f"{n}x{k} {bits}-bit block {block}{' act-order' if act else ''}{' dead+duplicate inputs' if dead else ''}"
            w, h = problem(n, k, seed=n + k + bits, dead=dead)
            wp, hp, out = os.path.join(tmp, "w.f32"), os.path.join(tmp, "h.f64"), os.path.join(tmp, "g")
            w.astype("<f4").tofile(wp)
            h.astype("<f8").tofile(hp)
            cmd = [args.probe, "gptq", "--w", wp, "--h", hp, "--n", n, "--k", k, "--bits", bits,
                   "--block", block, "--out", out]
            if act:
                cmd.append("--act-order")
            r = json.loads(common.run(cmd))
            step = np.fromfile(out + ".step.f32", "<f4")
            off = np.fromfile(out + ".offset.f32", "<f4")
            got = torch.from_numpy(np.fromfile(out + ".gptq.i16", "<i2").reshape(n, k).astype(np.int64))
            rtn = torch.from_numpy(np.fromfile(out + ".rtn.i16", "<i2").reshape(n, k).astype(np.int64))
            d = np.diag(h)
            fit, brute = grid_errors(w, d, step, off, bits), brute_force_grid_errors(w, d, bits)
            chk.check(bool(np.all(fit <= brute * (1 + 1e-9) + 1e-300)),
                      f"{name}: the fitted grid is the best ratio on every channel "
                      f"(worst excess {np.max(fit / np.maximum(brute, 1e-300)) - 1:.2e})")
            W, H = torch.from_numpy(w.astype(np.float64)), torch.from_numpy(h)
            S, O = torch.from_numpy(step), torch.from_numpy(off)
            ref_rtn = codes_of(W, S[:, None], O[:, None], bits).long()
            chk.check(torch.equal(rtn, ref_rtn), f"{name}: RTN codes equal torch's "
                                                 f"({int((rtn != ref_rtn).sum())} differ)")
            ref = gptq_ref(W, H, S, O, bits, block, act)
            agree = float((got == ref).double().mean())
            e_got, e_ref = out_error(W, got, S, O, H), out_error(W, ref, S, O, H)
            e_rtn = out_error(W, rtn, S, O, H)
            chk.check(agree >= 0.995, f"{name}: GPTQ codes agree with torch on {100 * agree:.3f} % of entries")
            chk.check(abs(e_got - e_ref) <= 0.01 * e_ref,
                      f"{name}: output error {e_got:.6g} vs torch {e_ref:.6g} (RTN {e_rtn:.6g}, "
                      f"GPTQ/RTN {e_got / e_rtn:.3f}; {r['seconds'] * 1000:.0f} ms)")
            chk.check(abs(r["error_gptq"] - e_got) <= 1e-9 * e_got, f"{name}: the probe's weighted_output_error")
            chk.check(e_got < e_rtn, f"{name}: GPTQ below RTN")
            if dead:
                chk.check(r["dead"] == 1, f"{name}: one dead input reported ({r['dead']})")
    chk.finish()


if __name__ == "__main__":
    main()
