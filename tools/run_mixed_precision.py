#!/usr/bin/python3
"""Mixed precision against uniform precision at the same weight size — the table of
docs/RESULTS.md between <!-- mixed:begin --> and <!-- mixed:end -->.

For each model (the shared ViT-Ti and CIFAR ViT), base method and target width B:
  uniform     `--bits B`
  nuclear     `--mixed-precision B --mp-sensitivity nuclear` (the paper's allocation)
  kl          `--mixed-precision B` (vitq's: end-to-end KL costs, the frontier checked on the
              simulated network, uniform kept unless a mixed plan measures better)
Each row: `vitq quantize` on the calibration split (--calib-size, default 200), the quantized model
directory run in integers on the dev split with --reference: top-1, agreement with FP32's top-1,
mean KL(p_FP32 || p); the weight bits of the blocks over the uniform model's; what the allocation
chose (report.json); calibration time (all of it: the uniform plans at every candidate width, the
measurements and the final calibration).

  /usr/bin/python3 tools/run_mixed_precision.py --out bench/results/mixed_precision.json --results docs/RESULTS.md
  /usr/bin/python3 tools/run_mixed_precision.py --models cifar --methods percentile --out /tmp/mp.json

Needs ../shared (models and data); exits with a message if it is absent. Resumes from --out.
"""
import argparse
import os
import sys

from results_md import load_results, machine, replace_block, save_results
from run_ablation import MODELS, quantize_and_evaluate  # the same two models, paths and labels

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# Base methods: name -> vitq quantize arguments.
METHODS = {"percentile": ["--method", "percentile"], "liu2021": ["--method", "liu2021", "--fast"]}
KINDS = {"uniform": ("uniform", lambda b: ["--bits", str(b)]),
         "nuclear": ("mixed, nuclear norm (the paper's)", lambda b: ["--mixed-precision", str(b), "--mp-sensitivity",
                                                                      "nuclear"]),
         "kl": ("**mixed, end-to-end KL** (vitq's default)", lambda b: ["--mixed-precision", str(b)])}


def measure(args, mk, method, bits, kind):
    out = os.path.join(args.work_dir, mk, f"{method}-{kind}{bits}")
    common, rep, _, _ = quantize_and_evaluate(args, mk, out, ["--quiet", *METHODS[method], *KINDS[kind][1](bits)])
    mp = rep.get("mixed_precision", {})
    row = dict(common, method=method, bits=bits, kind=kind, calib_seconds=max(rep["seconds"], mp.get("seconds", 0.0)))
    if mp:
        row["chosen"] = str(mp.get("chosen", "mixed"))
        if "gain_se" in mp:
            row["gain_se"] = mp["gain_se"]
        bits_list = mp.get("bits") or [md["bits"] for md in mp.get("modules", [])]
        row["module_bits"] = bits_list
        if "budget_weight_bits" in mp and "chosen_weight_bits" in mp:
            row["size_ratio"] = mp["chosen_weight_bits"] / mp["budget_weight_bits"]
    return row


def table(results):
    rows = list(results.values())
    d = sorted({r["date"] for r in rows})
    lines = [f"Measured {d[0] if len(d) == 1 else d[0] + ' to ' + d[-1]} on {machine()}; "
             "`tools/run_mixed_precision.py`. Each MSA and MLP module gets one width for its weights and inputs "
             "(candidates B−2..B+2), within the weight size of the uniform B-bit blocks. The quantized model "
             "directory run in integers on the dev split; agreement and KL against the FP32 model as in the "
             "ablation. `chosen` is what the allocation kept; with `kl` the plans are fitted on 3/4 of the calibration "
             "images and the choice is made on the held-out quarter, where a mixed plan must be better than uniform "
             "by more than 2 standard errors of the paired per-image KL difference (`gain`: the better mixed plan's, "
             "in standard errors; no gain: no checked allocation was better on average); module bits = attention "
             "and MLP width of each block in order.", ""]
    for mk, m in MODELS.items():
        mr = [r for r in rows if r["model"] == mk]
        if not mr:
            continue
        ncal = sorted({r["calib_images"] for r in mr})
        lines += [f"**{m['label']}** — calibration: {', '.join(map(str, ncal))} images; dev: "
                  f"{max(r['images'] for r in mr)} images", "",
                  "| base method | B | allocation | top-1 | agreement | KL | chosen (module bits) | calib. | file ÷ FP32 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        order = [(me, b, k) for me in METHODS for b in (6, 8) for k in KINDS]
        for r in sorted(mr, key=lambda r: order.index((r["method"], r["bits"], r["kind"]))):
            chosen = "–"
            if "chosen" in r:
                mb = r["module_bits"]
                bits = " ".join(f"{mb[i]}/{mb[i + 1]}" for i in range(0, len(mb), 2))  # per block: attention/MLP
                g = r.get("gain_se")
                gain = "" if g is None else f", gain {g:.1f} SE" if isinstance(g, (int, float)) else f", gain {g}"
                chosen = f"{r['chosen'].split(' ')[0]}{gain} ({bits})"
            lines.append(f"| {' '.join(METHODS[r['method']][1:])} | {r['bits']} | {KINDS[r['kind']][0]} | "
                         f"{r['top1']:.2f} | {r['agreement']:.2f} | {r['kl']:.4f} | {chosen} | "
                         f"{r['calib_seconds']:.0f} s | {r['file_ratio']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared-dir", default=os.path.join(REPO, "..", "shared"))
    ap.add_argument("--vitq", default=os.path.join(REPO, "build", "vitq"))
    ap.add_argument("--work-dir", default=os.path.join(REPO, "out", "mixed_precision"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--bits", default="6")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--calib-size", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True, help="results JSON (also read to resume: finished rows are kept)")
    ap.add_argument("--results", metavar="MD", help="replace the <!-- mixed:begin/end --> block of this file")
    args = ap.parse_args()
    if not os.path.isdir(args.shared_dir):
        sys.exit(f"run_mixed_precision: {args.shared_dir} not found (the shared models and data are needed)")
    results = load_results(args.out)
    for mk in args.models.split(","):
        for method in args.methods.split(","):
            for bits in map(int, args.bits.split(",")):
                for kind in args.kinds.split(","):
                    key = f"{mk}/{method}/{kind}{bits}"
                    if key in results:
                        continue
                    results[key] = measure(args, mk, method, bits, kind)
                    r = results[key]
                    print(f"{key:32s} top-1 {r['top1']:6.2f}  agreement {r['agreement']:6.2f}  KL {r['kl']:.4f}  "
                          f"{r.get('chosen', '')}  ({r['calib_seconds']:.0f} s)", flush=True)
                    save_results(args.out, results)
    if args.results:
        replace_block(args.results, "mixed", table(results))


if __name__ == "__main__":
    main()
