"""The quantizer and the similarity measures against numpy.

Level grids (log2, log√2, small float) of the softmax output: the tables built here from their
definitions (docs/FORMAT.md) with Python's exact integers and fractions, and the levels of random
probabilities (nearest level of round(p·2^15), ties to the larger) by a numpy search. Per-token
codes: each row's step (max(x,0) − min(x,0)) / (2^b − 1) in float32 and its zero point.

Quantizer: clip(round(x / Δ), −2^(b−1), 2^(b−1)−1) with numpy's round-half-to-even, for
every bit-width 2..10, signed and unsigned grids, on random values, exact .5 ties, values
beyond the clip range, zeros and negative zeros. Pearson and cosine: numpy corrcoef and a
float64 dot product."""
import json
import math
import os

import numpy as np

import common


def level_table(grid, bits):
    """The levels of a level grid (docs/FORMAT.md), ascending, from the definition."""
    from fractions import Fraction
    if grid == "log2":
        n = min((1 << bits) - 1, 16)
        return np.array(sorted([0] + [32768 >> e for e in range(n)]), np.int64)
    if grid == "logsqrt2":  # round(2^15 · 2^(-e/2)) = the integer nearest to sqrt(2^(30-e)), exactly
        out, e = [], 0
        while len(out) < (1 << bits) - 1:
            n2 = Fraction(1 << 30, 1 << e)                  # the square of the value
            r = math.isqrt(int(n2))                          # floor of the value (n2 < 1: 0)
            r = r + 1 if n2 > Fraction((2 * r + 1) ** 2, 4) else r  # above r + 1/2? (never a tie: irrational or integer)
            if r == 0:
                break
            if not out or r < out[-1]:
                out.append(r)
            e += 1
        return np.array(sorted([0] + out), np.int64)
    mant = max(bits - 4, 0)
    out, e = [], 0
    while len(out) < (1 << bits) - 1:
        for m in range(1 << mant):
            v = Fraction(32768, 1 << e) * (1 - Fraction(m, 1 << (mant + 1)))
            r = round(v)  # Python rounds a Fraction half to even
            if r == 0 or len(out) == (1 << bits) - 1:
                return np.array(sorted([0] + out), np.int64)
            if not out or r < out[-1]:
                out.append(r)
        e += 1
    return np.array(sorted([0] + out), np.int64)


def main():
    args = common.parse_args()
    chk = common.Checker()
    rng = np.random.default_rng(0)
    with common.tmpdir() as tmp:
        for bits in range(2, 11):
            for uns in (False, True):
                scale = np.float32(0.0371)
                hi = (1 << bits) - 1 if uns else (1 << (bits - 1)) - 1
                lo = 0 if uns else -(1 << (bits - 1))
                k = np.arange(lo - 3, hi + 4, dtype=np.float32)
                ties = (k + np.float32(0.5)) * scale           # near .5 ties (after rounding of the product)
                exact_ties = (k + np.float32(0.5)).astype(np.float32)  # with scale 1: exact ties
                x = np.concatenate([rng.normal(0, hi * scale / 2, 5000).astype(np.float32), ties,
                                    np.array([0.0, -0.0, 1e30, -1e30], np.float32)])
                for xs, sc in ((x, scale), (exact_ties, np.float32(1.0))):
                    inp = os.path.join(tmp, "x.f32")
                    xs.astype("<f4").tofile(inp)
                    out = os.path.join(tmp, "q")
                    cmd = [args.probe, "quantize", "--input", inp, "--bits", bits, "--scale", repr(float(sc)), "--out", out]
                    if uns:
                        cmd.append("--unsigned")
                    common.run(cmd)
                    ref = np.clip(np.round(xs / sc), lo, hi).astype(np.int64)   # numpy rounds half to even
                    got = np.fromfile(out + ".i32", "<i4").astype(np.int64)
                    got16 = np.fromfile(out + ".i16", "<i2").astype(np.int64)
                    fq = np.fromfile(out + ".f32", "<f4")
                    ok = np.array_equal(got, ref) and np.array_equal(got16, ref) and \
                        np.array_equal(fq, (ref.astype(np.float32) * sc).astype(np.float32))
                    kind = "exact .5 ties" if sc == 1.0 else "random + near-ties + extremes"
                    chk.check(ok, f"{bits}-bit {'unsigned' if uns else 'signed'} grid, {kind}: "
                                  f"{int((got != ref).sum())} code mismatches of {len(ref)}")
        # Level grids and per-token codes
        p = np.concatenate([rng.random(4000, np.float32) ** 6, rng.random(4000, np.float32),
                            np.array([0, 1, 1.5, -0.1, 2.0 ** -16, 2.0 ** -15, 3 * 2.0 ** -17], np.float32)])
        p = p[: (len(p) // 64) * 64].astype(np.float32)
        inp = os.path.join(tmp, "p.f32")
        p.astype("<f4").tofile(inp)
        for grid in ("log2", "logsqrt2", "float"):
            for bits in (3, 4, 6, 8):
                out = os.path.join(tmp, "l")
                common.run([args.probe, "levels", "--input", inp, "--grid", grid, "--bits", bits, "--row", 64,
                            "--out", out])
                table = np.fromfile(out + ".table.i32", "<i4")
                chk.check(np.array_equal(table, level_table(grid, bits)),
                          f"{grid} grid, {bits} bits: table of {len(table)} levels = the definition's")
                v = np.clip(np.round(p.astype(np.float64) * 32768), 0, 32768)  # numpy: half to even
                t = level_table(grid, bits).astype(np.float64)
                d = np.abs(v[:, None] - t[None, :])
                best = t[len(t) - 1 - np.argmin(d[:, ::-1], axis=1)]            # ties: the larger level
                got = np.fromfile(out + ".i32", "<i4")
                chk.check(np.array_equal(got, best.astype(np.int64)),
                          f"{grid} grid, {bits} bits: levels of {len(p)} values, {int((got != best).sum())} mismatches")
        x = rng.normal(0.3, 2.0, 64 * 50).astype(np.float32)
        x[:64] = np.abs(x[:64])  # a one-sided row
        x[64:128] = 0             # an all-zero row
        x.astype("<f4").tofile(inp)
        for bits, clip in ((4, 1.0), (8, 1.0), (4, 0.95), (6, 0.7)):
            out = os.path.join(tmp, "t")
            common.run([args.probe, "levels", "--input", inp, "--grid", "float", "--bits", bits, "--row", 64,
                        "--token-clip", clip, "--out", out])
            rows = x.reshape(-1, 64)
            c = np.float32(clip)  # the range [c·mn, c·mx]: the row's extremes clip
            mn = (np.minimum(rows.min(1), 0).astype(np.float32) * c).astype(np.float32)
            mx = (np.maximum(rows.max(1), 0).astype(np.float32) * c).astype(np.float32)
            step = ((mx - mn) / np.float32((1 << bits) - 1)).astype(np.float32) * np.float32(1 + 2 ** -10)  # the tie-breaking stretch
            step[step < 1e-30] = 1
            lo = np.round(mn / step)
            ref = np.clip(np.round(rows / step[:, None]), lo[:, None], lo[:, None] + (1 << bits) - 1)
            got = np.fromfile(out + ".tok.i32", "<i4").reshape(-1, 64)
            chk.check(np.array_equal(np.fromfile(out + ".tok.f32", "<f4"), step) and np.array_equal(got, ref),
                      f"per-token codes, {bits} bits, clip {clip}: {int((got != ref).sum())} mismatches of {got.size}")
        # Pearson / cosine
        for n, corr in [(10, 0.5), (1000, 0.99), (100000, 0.9999), (197 * 192, -0.3)]:
            a = rng.normal(3.0, 2.0, n).astype(np.float32)
            b = (corr * a + np.sqrt(1 - corr ** 2) * rng.normal(0, 2.0, n) + 1.5).astype(np.float32)
            pa, pb = os.path.join(tmp, "a.f32"), os.path.join(tmp, "b.f32")
            a.astype("<f4").tofile(pa)
            b.astype("<f4").tofile(pb)
            r = json.loads(common.run([args.probe, "similarity", "--a", pa, "--b", pb]))
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            ref_p = np.corrcoef(a64, b64)[0, 1]
            ref_c = a64 @ b64 / np.sqrt((a64 @ a64) * (b64 @ b64))
            ref_m = np.mean((a64 - b64) ** 2)
            for name, got, ref in [("pearson (search statistics)", r["pearson"], ref_p),
                                   ("pearson (reference)", r["pearson_ref"], ref_p),
                                   ("cosine (search statistics)", r["cosine"], ref_c),
                                   ("cosine (reference)", r["cosine_ref"], ref_c)]:
                chk.check(abs(got - ref) <= 1e-6 * max(1.0, abs(ref)), f"{name}, n={n}: {got:.9f} vs numpy {ref:.9f}")
            chk.check(abs(r["mse"] - ref_m) <= 1e-5 * ref_m, f"mse n={n}: {r['mse']:.6g} vs numpy {ref_m:.6g}")
    chk.finish()


if __name__ == "__main__":
    main()
