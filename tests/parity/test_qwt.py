"""The QwT error compensation fit (src/quant/compensation.h) against numpy's least squares.

For block inputs X (rows × d) and errors E (rows × d): with X̃ = [X 1] and λ = damp · mean diag(XᵀX),
[Wᵀ; b] = argmin ‖X̃Θ − E‖² + λ‖Θ[:d]‖² (the bias row unpenalised) is the ordinary least-squares
solution of the stacked system [X̃; √λ [I 0]] Θ = [E; 0] — numpy.linalg.lstsq (SVD) in float64.
Checks: W, b within 1e-4 of the largest entry of the reference; R² = 1 − ‖E − X̃Θ‖² / ‖E − mean E‖²
and the relative errors ‖E‖²/‖Y‖², ‖E − X̃Θ‖²/‖Y‖² within 0.1 % of numpy's; a case where E does
not depend on X (pure noise) gets R² ≈ 0 and no compensation when it is ≤ 0."""
import json
import os

import numpy as np

import common


def main():
    args = common.parse_args()
    chk = common.Checker()
    rng = np.random.default_rng(11)
    # rows, d, damp, share of E explained by X (0: none)
    cases = [(4000, 32, 1e-4, 0.3), (3000, 48, 0.0, 0.8), (5000, 24, 0.01, 0.1), (2500, 16, 1e-4, 0.0)]
    with common.tmpdir() as tmp:
        for rows, d, damp, share in cases:
            name = f"{rows}x{d}, damp {damp}, explained share {share}"
            mix = np.eye(d) + rng.normal(0, 0.4, (d, d))
            x = (rng.normal(0, 1, (rows, d)) @ mix + rng.normal(0, 2, d)).astype(np.float32)
            x[:, 2] *= 20  # an outlier channel, as in the residual stream
            a = rng.normal(0, 0.1, (d, d))
            signal = x.astype(np.float64) @ a.T + rng.normal(0, 0.3, d)
            noise = rng.normal(0, 1, (rows, d)) * signal.std()
            e = (share * signal + (1 - share) * noise).astype(np.float32)
            y = (x + rng.normal(0, 1, x.shape)).astype(np.float32)
            paths = {nm: os.path.join(tmp, nm + ".f32") for nm in "xey"}
            for nm, v in zip("xey", (x, e, y)):
                v.astype("<f4").tofile(paths[nm])
            out = os.path.join(tmp, "c")
            r = json.loads(common.run([args.probe, "qwt", "--x", paths["x"], "--e", paths["e"], "--y", paths["y"],
                                       "--rows", rows, "--d", d, "--damp", damp, "--out", out]))
            gw = np.fromfile(out + ".w.f32", "<f4").reshape(d, d)
            gb = np.fromfile(out + ".b.f32", "<f4")
            xt = np.hstack([x.astype(np.float64), np.ones((rows, 1))])
            lam = damp * (x.astype(np.float64) ** 2).sum(0).mean()
            reg = np.hstack([np.sqrt(lam) * np.eye(d), np.zeros((d, 1))])
            th = np.linalg.lstsq(np.vstack([xt, reg]), np.vstack([e.astype(np.float64), np.zeros((d, d))]),
                                 rcond=None)[0]
            scale = np.abs(th).max()
            diff = max(np.abs(gw - th[:d].T).max(), np.abs(gb - th[d]).max())
            chk.check(diff <= 1e-4 * scale, f"{name}: W, b = lstsq's (max difference {diff:.2e}, largest {scale:.3g})")
            e64 = e.astype(np.float64)
            res = ((e64 - xt @ th) ** 2).sum()
            r2 = 1 - res / ((e64 - e64.mean(0)) ** 2).sum()
            yy = (y.astype(np.float64) ** 2).sum()
            chk.check(abs(r["r2"] - r2) <= 1e-3 * max(abs(r2), 1e-3), f"{name}: R² {r['r2']:.6g} = numpy's {r2:.6g}")
            chk.check(abs(r["error_before"] - (e64 ** 2).sum() / yy) <= 1e-3 * (e64 ** 2).sum() / yy,
                      f"{name}: relative error before {r['error_before']:.6g}")
            chk.check(abs(r["error_after"] - res / yy) <= 1e-3 * res / yy,
                      f"{name}: relative error after {r['error_after']:.6g} = numpy's {res / yy:.6g}")
            chk.check(r["used"] == (r2 > 0), f"{name}: used = (R² > 0) ({r['used']}, R² {r2:.4g})")
            if share == 0:
                chk.check(abs(r2) < 0.02, f"{name}: noise is not explained (R² {r2:.4g})")
            else:  # signal and noise of equal spread: the explainable share is s² / (s² + (1 − s)²)
                want = share ** 2 / (share ** 2 + (1 - share) ** 2)
                chk.check(r2 > 0.5 * want, f"{name}: the map explains part of the error (R² {r2:.4g}, "
                                           f"about {want:.3g} explainable)")
    chk.finish()


if __name__ == "__main__":
    main()
