"""The quantizer and the similarity measures against numpy.

Quantizer: clip(round(x / Δ), −2^(b−1), 2^(b−1)−1) with numpy's round-half-to-even, for
every bit-width 2..10, signed and unsigned grids, on random values, exact .5 ties, values
beyond the clip range, zeros and negative zeros. Pearson and cosine: numpy corrcoef and a
float64 dot product."""
import json
import os

import numpy as np

import common


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
