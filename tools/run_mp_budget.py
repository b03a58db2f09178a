#!/usr/bin/python3
"""Mixed precision under a budget the user states, against uniform widths, on ViT-Ti — the table
of docs/RESULTS.md between <!-- mpbudget:begin --> and <!-- mpbudget:end -->.

1. `vitq bench --latency-table` of the checkpoint on this machine (widths 8 and 10, --batch).
2. For the base method (minmax: its W8A8 is 6 points below FP32 on ViT-Ti and its error shrinks
   with the step, so wider modules have something to buy): uniform W8A8 and W10A10, then `--mixed-precision 8 --mp-candidates
   8,10` within latency budgets (multiples of uniform W8A8's predicted latency) and with accuracy
   floors (`kl=X`, the cheapest allocation by latency whose KL on the held-out calibration images
   is at most X). Each quantized model run in integers on the dev split (top-1, agreement, KL to
   FP32, as the ablation).
3. Every model's latency measured with `vitq bench --batch B` in one interleaved pass (median of
   --reps passes), beside the latency the table predicted for its widths.

  /usr/bin/python3 tools/run_mp_budget.py --out bench/results/mp_budget.json --results docs/RESULTS.md

Needs ../shared; resumes from --out (the latency pass is redone each time: ratios from one run).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

from results_md import load_results, machine, replace_block, save_results
from run_ablation import MODELS, quantize_and_evaluate

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def entry_for(table, bits):
    same = [e for e in table["widths"] if e["bits"] == bits]
    if same:
        return same[0]
    planes = lambda b: 2 if b > 8 else 1
    return sorted((abs(e["bits"] - bits), e) for e in table["widths"] if planes(e["bits"]) == planes(bits))[0][1]


def predicted_ms(table, bits_per_module, target):
    t = entry_for(table, target)["rest"]
    for m, b in enumerate(bits_per_module):
        e = entry_for(table, b)
        t += e["qkv"] + e["attention"] + e["proj"] if m % 2 == 0 else e["fc1"] + e["fc2"]
    return t


def bench_ms(args, qdir):
    out = subprocess.run([args.vitq, "bench", "--model", qdir, "--batch", str(args.batch), "--threads",
                          str(args.threads), "--iters", "10"], capture_output=True, text=True, check=True).stdout
    return float(re.search(r"([0-9.]+) ms per image", out).group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared-dir", default=os.path.join(REPO, "..", "shared"))
    ap.add_argument("--vitq", default=os.path.join(REPO, "build", "vitq"))
    ap.add_argument("--work-dir", default=os.path.join(REPO, "out", "mp_budget"))
    ap.add_argument("--method", default="minmax")
    ap.add_argument("--latency-factors", default="1.25,2")
    ap.add_argument("--floors", default="0.1,0.05")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--calib-size", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    ap.add_argument("--results", metavar="MD")
    args = ap.parse_args()
    if not os.path.isdir(args.shared_dir):
        sys.exit(f"run_mp_budget: {args.shared_dir} not found (the shared models and data are needed)")
    mk = "vit_ti"
    model = os.path.join(args.shared_dir, MODELS[mk]["model"])
    os.makedirs(args.work_dir, exist_ok=True)
    table_path = os.path.join(args.work_dir, "latency_table.json")
    if not os.path.exists(table_path):
        subprocess.run([args.vitq, "bench", "--model", model, "--latency-table", table_path, "--widths", "8,10",
                        "--batch", str(args.batch), "--threads", str(args.threads), "--iters", "10"], check=True)
    with open(table_path) as f:
        table = json.load(f)
    depth = table["depth"]
    results = load_results(args.out)
    base = ["--quiet", "--method", args.method]
    mp = ["--mixed-precision", "8", "--mp-candidates", "8,10", "--latency-table", table_path]
    u8 = predicted_ms(table, [8] * (2 * depth), 8)
    configs = [("uniform W8A8", ["--bits", "8"]), ("uniform W10A10", ["--bits", "10"])]
    for f in (map(float, args.latency_factors.split(",")) if args.latency_factors else []):
        configs.append((f"latency <= {f:g} x W8A8 ({f * u8:.2f} ms)", mp + ["--mp-budget", f"latency={f * u8:.4f}"]))
    for k in (map(float, args.floors.split(",")) if args.floors else []):
        configs.append((f"KL <= {k:g}, cheapest by latency", mp + ["--mp-budget", f"kl={k:g}"]))
    for name, qargs in configs:
        if name in results:
            continue
        out = os.path.join(args.work_dir, re.sub(r"[^A-Za-z0-9.]+", "_", name))
        try:
            common, rep, _, _ = quantize_and_evaluate(args, mk, out, base + qargs)
        except SystemExit:  # e.g. a floor no allocation reaches: vitq said why (printed above)
            print(f"{name}: vitq quantize refused or failed; row left out", flush=True)
            continue
        m = rep.get("mixed_precision", {})
        bits = m.get("bits") or [int(re.search(r"W(\d+)", name).group(1))] * (2 * depth)
        row = dict(common, config=name, module_bits=bits, predicted_ms=predicted_ms(table, bits, 8 if m else bits[0]),
                   calib_seconds=max(rep["seconds"], m.get("seconds", 0.0)), out=out)
        if m:
            best = min(m.get("checked", []), key=lambda c: c["kl"], default=None)
            row.update(chosen=m.get("chosen"), final=m.get("final", ""), budget=m.get("budget", {}).get("text"),
                       gain_se=m.get("gain_se"), holdout_uniform_kl=m.get("uniform_kl"),
                       holdout_best_checked_kl=best["kl"] if best else None)
        results[name] = row
        print(f"{name:40s} top-1 {row['top1']:6.2f}  agreement {row['agreement']:6.2f}  KL {row['kl']:.4f}  "
              f"predicted {row['predicted_ms']:.2f} ms  ({row['calib_seconds']:.0f} s)", flush=True)
        save_results(args.out, results)
    # Latency of every model, interleaved passes.
    times = {n: [] for n in results}
    for _ in range(args.reps):
        for n in times:
            times[n].append(bench_ms(args, results[n]["out"]))
    for n, t in times.items():
        results[n]["measured_ms"] = statistics.median(t)
        results[n]["bench_batch"] = args.batch
    save_results(args.out, results)
    if args.results:
        rows = [results[n] for n, _ in configs if n in results]
        lines = [f"Measured {rows[0]['date']} on {machine()}; `tools/run_mp_budget.py`. ViT-Ti, base method "
                 f"`{args.method}`, {rows[0]['calib_images']} calibration images; mixed rows: `--mixed-precision 8 "
                 "--mp-candidates 8,10 --latency-table T` with the budget shown (the table: `vitq bench "
                 f"--latency-table` of the checkpoint at batch {args.batch}, widths 8 and 10). Integer runs on the dev "
                 f"split ({rows[0]['images']} images); latency: `vitq bench --batch {args.batch}` of each quantized "
                 f"model, median of {args.reps} interleaved passes; predicted: the table's price of the plan's widths. "
                 "Module bits: attention/MLP width per block.", "",
                 "`kept`: what the search kept, with the held-out KL of uniform W8A8 and of the best mixed point it "
                 "measured (within a budget uniform W8A8 fits, a mixed plan must be better by more than 2 standard "
                 "errors of the paired per-image difference; with a floor the cheapest point within it is kept).", "",
                 "| plan | top-1 | agreement | KL | predicted ms/img | measured ms/img | kept (held-out KL: uniform → best mixed) | module bits | calib. |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            mb = r["module_bits"]
            bits = " ".join(f"{mb[i]}/{mb[i + 1]}" for i in range(0, len(mb), 2))
            kept = "–"
            if r.get("chosen"):
                g = r.get("gain_se")
                gain = f", gain {g:.1f} SE" if isinstance(g, (int, float)) else ""
                hk, bk = r.get("holdout_uniform_kl"), r.get("holdout_best_checked_kl")
                kept = f"{r['chosen'].split(' ')[0]}{gain}" + (f" ({hk:.3f} → {bk:.3f})" if hk and bk else "")
            lines.append(f"| {r['config']} | {r['top1']:.2f} | {r['agreement']:.2f} | {r['kl']:.4f} | "
                         f"{r['predicted_ms']:.2f} | {r['measured_ms']:.2f} | {kept} | {bits} | {r['calib_seconds']:.0f} s |")
        replace_block(args.results, "mpbudget", "\n".join(lines))


if __name__ == "__main__":
    main()
