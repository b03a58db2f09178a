"""The ridge update (src/quant/ridge_update.h) against numpy's least squares.

For inputs X (rows × K), targets Y (rows × N: given, the FP model's output, or local: X·Wᵀ + b),
weights W (N × K) and bias b: with x̂ the rows
per-token quantize-dequantized (or X itself), X̃ = [x̂ 1] and λ = damp · (Σ diag(X̂ᵀX̂) + rows) / (K + 1),
[W' b']ᵀ = argmin ‖X̃Θ − Y‖² + λ‖Θ − [W b]ᵀ‖² is the ordinary least-squares solution of the
stacked system [X̃; √λ I] Θ = [Y; √λ [W b]ᵀ] — numpy.linalg.lstsq (SVD) in float64 here. Per-token
codes: each row's step (max(x,0) − min(x,0)) / (2^b − 1) in float32, its zero point
round(min/step), codes clip(round(x/step)) (docs/FORMAT.md). Checks: W', b' within 1e-4 of the
largest entry of the reference; the probe's relative errors before and after equal numpy's within
0.1 % (vitq forms them from float-summed moments as Σ‖y‖² − 2 tr(ΘᵀX̃ᵀY) + tr(ΘᵀX̃ᵀX̃Θ))."""
import json
import os

import numpy as np

import common


def per_token(x, bits):
    mn = np.minimum(x.min(1), 0).astype(np.float32)
    mx = np.maximum(x.max(1), 0).astype(np.float32)
    step = ((mx - mn) / np.float32((1 << bits) - 1)).astype(np.float32) * np.float32(1 + 2 ** -10)  # the tie-breaking stretch
    step[step == 0] = 1
    lo = np.rint(mn / step)
    q = np.clip(np.rint(x / step[:, None]), lo[:, None], lo[:, None] + (1 << bits) - 1)
    return (q * step[:, None]).astype(np.float32)


def main():
    args = common.parse_args()
    chk = common.Checker()
    rng = np.random.default_rng(5)
    cases = [(3000, 48, 32, 0, 0.01, "fp"), (3000, 48, 32, 4, 0.01, "fp"), (2000, 96, 20, 6, 0.1, "fp"),
             (800, 64, 16, 3, 1e-4, "fp"), (3000, 48, 32, 4, 0.01, "local"), (2000, 96, 20, 3, 1.0, "local")]
    with common.tmpdir() as tmp:
        for rows, k, n, bits, damp, target in cases:
            name = (f"{rows}x{k} -> {n}, {'per-token ' + str(bits) + '-bit' if bits else 'FP'} inputs, damp {damp}, "
                    f"{target} target")
            mix = np.eye(k) + rng.normal(0, 0.4, (k, k))
            xf = (rng.normal(0, 1, (rows, k)) @ mix).astype(np.float32)
            xf[:, 3] *= 6
            x = (xf + rng.normal(0, 0.2, xf.shape)).astype(np.float32)  # the partly quantized model's input
            w = rng.normal(0, 0.2, (n, k)).astype(np.float32)
            b = rng.normal(0, 0.5, n).astype(np.float32)
            y = (xf.astype(np.float64) @ w.T + b).astype(np.float32)    # the FP model's output
            paths = {nm: os.path.join(tmp, nm + ".f32") for nm in "xywb"}
            for nm, v in zip("xywb", (x, y, w, b)):
                v.astype("<f4").tofile(paths[nm])
            out = os.path.join(tmp, "r")
            r = json.loads(common.run([args.probe, "ridge", "--x", paths["x"], "--y", paths["y"], "--w", paths["w"],
                                       "--b", paths["b"], "--rows", rows, "--n", n, "--k", k, "--bits", bits,
                                       "--damp", damp, "--target", target, "--out", out]))
            gw = np.fromfile(out + ".w.f32", "<f4").reshape(n, k)
            gb = np.fromfile(out + ".b.f32", "<f4")
            xh = per_token(x, bits) if bits else x
            if target == "local":  # the site's own output of its unquantized input
                y = (x.astype(np.float64) @ w.T.astype(np.float64) + b).astype(np.float32)
            xt = np.hstack([xh.astype(np.float64), np.ones((rows, 1))])
            lam = damp * ((xt[:, :k] ** 2).sum() + rows) / (k + 1)
            th0 = np.vstack([w.T, b[None, :]]).astype(np.float64)
            a = np.vstack([xt, np.sqrt(lam) * np.eye(k + 1)])
            rhs = np.vstack([y.astype(np.float64), np.sqrt(lam) * th0])
            th = np.linalg.lstsq(a, rhs, rcond=None)[0]
            scale = np.abs(th).max()
            dw, db = np.abs(gw - th[:k].T).max(), np.abs(gb - th[k]).max()
            chk.check(max(dw, db) <= 1e-4 * scale, f"{name}: W', b' = lstsq's (max difference {max(dw, db):.2e}, "
                                                   f"largest entry {scale:.3g})")
            yy = (y.astype(np.float64) ** 2).sum()
            before = ((xt @ th0 - y) ** 2).sum() / yy
            after = ((xt @ th - y) ** 2).sum() / yy
            chk.check(abs(r["error_before"] - before) <= 1e-3 * before,
                      f"{name}: relative error before {r['error_before']:.6g} = numpy's {before:.6g}")
            chk.check(abs(r["error_after"] - after) <= 1e-3 * after,
                      f"{name}: relative error after {r['error_after']:.6g} = numpy's {after:.6g}")
            chk.check(after < before, f"{name}: the update lowers the error ({before:.4g} -> {after:.4g})")
    chk.finish()


if __name__ == "__main__":
    main()
