#!/usr/bin/python3
"""Calibration cost of vitq's PTQ methods: wall time and peak memory of `vitq quantize`.

Measures, one run after the other on this machine (2 threads):
  * every method (`--methods`) at W6A6 on the shared ViT-Ti (`imagenet-sample/calib`,
    `--calib-size` images, default 200);
  * the paper's method (liu2021) at W6A6 on a random-weight DeiT-S calibrated on
    `--deit-images` random images (default 128; `--random-calibration`);
  * the documented approximations of liu2021 (`--variants`, default: all of VARIANTS below, among
    them `--fast`) on the same ViT-Ti data, for comparison; the goals are the exhaustive
    method's and are not applied to them;
  * the dev top-1 of every ViT-Ti plan, the price of each approximation;
and prints them against the goals of the issues: liu2021 on ViT-Ti <= 3 min, on DeiT-S
<= 15 min, peak memory <= 4 GB; LAPQ at its default evaluation budget <= 15 min.
Wall time is what `vitq quantize` reports for calibration (loading images excluded) and the
process's wall time around it; peak memory is the process's maximum resident set.

  /usr/bin/python3 bench/calib_cost.py --out bench/results/calib_cost.json --results docs/RESULTS.md
  /usr/bin/python3 bench/calib_cost.py --methods liu2021 --skip-deit --out /tmp/c.json
The --out file is also read back: rows measured earlier the same day with the same settings
are kept, so a long run can be done in parts. --results (old name: --readme) replaces the block
between <!-- calibcost:begin --> and <!-- calibcost:end --> of that file (docs/RESULTS.md).

Needs ../shared for the ViT-Ti part (skipped with a message if absent) and Debian's torch for
the random DeiT-S checkpoint (tests/parity/ref_vit.py writes it).
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tools"))
sys.path.insert(0, os.path.join(REPO, "tests", "parity"))
from results_md import machine, replace_block  # noqa: E402  (the same machine line as the accuracy table)
METHODS = ["minmax", "percentile", "easyquant", "liu2021", "aciq", "lapq", "bitsplit"]
GOALS = {("vit_ti", "liu2021"): 180.0, ("deit_s", "liu2021"): 900.0, ("vit_ti", "lapq"): 900.0}
MEM_GOAL_MB = 4096.0
# name -> (method label, vitq quantize arguments, note) of an approximate configuration measured on ViT-Ti.
VARIANTS = {"rank64": ("liu2021 --rank-tokens 64", ["--method", "liu2021", "--rank-tokens", "64"],
                       "approximate ranking loss (not the faithful method)"),
            "coarse10": ("liu2021 --coarse-stride 10", ["--method", "liu2021", "--coarse-stride", "10"],
                         "coarse-to-fine sweeps over the same candidates (not exhaustive)"),
            "coarse10-rank64": ("liu2021 --coarse-stride 10 --rank-tokens 64",
                                ["--method", "liu2021", "--coarse-stride", "10", "--rank-tokens", "64"],
                                "`--fast`: coarse-to-fine sweeps, approximate ranking loss"),
            "rank64-search64": ("liu2021 --rank-tokens 64 --search-tokens 64",
                     ["--method", "liu2021", "--rank-tokens", "64", "--search-tokens", "64"],
                     "approximate ranking loss and search (not the faithful method)")}
NOTES = {label: note for label, _, note in VARIANTS.values()}


def quantize(vitq, args, out, threads):
    os.makedirs(out, exist_ok=True)
    cmd = [vitq, "quantize", *args, "--bits", "6", "--threads", str(threads), "--plan-only", "-q", "--force", "-o", out]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    if r.returncode != 0:
        sys.exit(f"calib_cost: failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    with open(os.path.join(out, "report.json")) as f:
        rep = json.load(f)
    return dict(calib_seconds=rep["seconds"], process_seconds=wall, peak_rss_mb=rep["peak_rss_mb"],
                images=rep["calibration"]["images"])


def random_deit_s(work):
    d = os.path.join(work, "deit_small_patch16_224")
    if not os.path.exists(os.path.join(d, "model.safetensors")):
        import ref_vit  # noqa: E402  (torch: only for writing the checkpoint)
        ref_vit.write_random_checkpoint(d, "deit_small_patch16_224")
    return d


def table(res):
    lines = [f"Measured {res['date']} on {res['machine']}; `bench/calib_cost.py`, 2 threads, W6A6, one run each. "
             "Calibration time as `vitq quantize` reports it (image loading excluded; process wall time in "
             "brackets); peak memory = the process's maximum RSS; dev top-1 = the plan's accuracy on "
             "imagenet-sample/dev (400 images, simulated quantization).", "",
             "| model | method | images | calibration time | peak memory | dev top-1 | goal |",
             "|---|---|---|---|---|---|---|"]
    def order(r):  # ViT-Ti in METHODS order, its variants, then DeiT-S
        return (r["model"] != "vit_ti", METHODS.index(r["method"]) if r["method"] in METHODS else len(METHODS),
                r["method"])
    for r in sorted(res["rows"], key=order):
        goal = GOALS.get((r["model"], r["method"]))
        g = []
        if goal is not None:
            ok = r["calib_seconds"] <= goal
            g.append(f"≤ {goal / 60:.0f} min {'✓' if ok else '✗ (' + format(r['calib_seconds'] / goal, '.1f') + '×)'}")
        if r["method"] in NOTES:
            g.append(NOTES[r["method"]])
        if r["method"] == "liu2021":
            g.append(f"≤ 4 GB {'✓' if r['peak_rss_mb'] <= MEM_GOAL_MB else '✗'}")
        lines.append(f"| {r['label']} | {r['method']} | {r['images']} | {r['calib_seconds']:.0f} s "
                     f"({r['process_seconds']:.0f} s) | {r['peak_rss_mb']:.0f} MB | "
                     f"{format(r['top1'], '.2f') if 'top1' in r else '–'} | {'; '.join(g) or '–'} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared-dir", default=os.path.join(REPO, "..", "shared"))
    ap.add_argument("--vitq", default=os.path.join(REPO, "build", "vitq"))
    ap.add_argument("--work-dir", default=os.path.join(REPO, "out", "calib_cost"))
    ap.add_argument("--methods", default=",".join(METHODS), help="methods measured on ViT-Ti (comma-separated)")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"approximate configurations measured on ViT-Ti (comma-separated, from {', '.join(VARIANTS)}; "
                         "empty for none)")
    ap.add_argument("--calib-size", type=int, default=200, help="ViT-Ti calibration images")
    ap.add_argument("--deit-images", type=int, default=128, help="random calibration images of the DeiT-S run")
    ap.add_argument("--skip-deit", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--extra", default="", help="extra vitq quantize arguments for every run (space-separated)")
    ap.add_argument("--out", required=True, help="results JSON")
    ap.add_argument("--results", "--readme", dest="results", metavar="MD",
                    help="replace the <!-- calibcost:begin/end --> block of this markdown file (docs/RESULTS.md; "
                         "--readme is the old name)")
    args = ap.parse_args()
    if not os.path.exists(args.vitq):
        sys.exit(f"calib_cost: {args.vitq} not found; build first (./setup.sh)")
    extra = args.extra.split()
    res = dict(date=datetime.date.today().isoformat(), machine=machine(), extra=args.extra, rows=[])
    if os.path.exists(args.out):  # resume: keep the rows measured before (same date, machine and extras)
        with open(args.out) as f:
            old = json.load(f)
        if (old.get("date"), old.get("machine"), old.get("extra")) == (res["date"], res["machine"], res["extra"]):
            res["rows"] = old["rows"]
    done = {(r["model"], r["method"]) for r in res["rows"]}

    def save():
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)

    ti = os.path.join(args.shared_dir, "models", "vit_tiny_patch16_224")
    if os.path.isdir(ti):
        data = os.path.join(args.shared_dir, "data", "imagenet-sample")
        runs = [(m, m, ["--method", m]) for m in filter(None, args.methods.split(","))]
        for v in filter(None, args.variants.split(",")):
            if v not in VARIANTS:
                sys.exit(f"calib_cost: unknown variant {v!r} (choose from {', '.join(VARIANTS)})")
            runs.append((v, *VARIANTS[v][:2]))
        for key, m, margs in runs:
            if ("vit_ti", m) in done:
                continue
            print(f"ViT-Ti {m} W6A6, {args.calib_size} images ...", flush=True)
            r = quantize(args.vitq, ["--model", ti, "--calib", os.path.join(data, "calib"), "--class-map",
                                     os.path.join(data, "class_map.txt"), "--calib-size", str(args.calib_size),
                                     *margs, *extra], os.path.join(args.work_dir, "vit_ti", key), args.threads)
            r.update(model="vit_ti", label="ViT-Ti (shared, augreg)", method=m, key=key)
            print(f"  {r['calib_seconds']:.1f} s, {r['peak_rss_mb']:.0f} MB", flush=True)
            res["rows"].append(r)
            save()
        # Dev top-1 of every ViT-Ti plan (simulated quantization), so that the approximate rows'
        # speed can be weighed against what they cost (W6A6 on 400 images: 0.25 points per image).
        keys = {m: m for m in METHODS} | {label: k for k, (label, _, _) in VARIANTS.items()}
        for r in res["rows"]:
            plan = os.path.join(args.work_dir, "vit_ti", r.get("key", keys.get(r["method"], "")), "plan.json")
            if r["model"] == "vit_ti" and "top1" not in r and os.path.exists(plan):
                ev = plan[: -len("plan.json")] + "eval.json"
                subprocess.run([args.vitq, "eval", "--model", ti, "--data", os.path.join(data, "dev"), "--class-map",
                                os.path.join(data, "class_map.txt"), "--plan", plan, "--threads", str(args.threads),
                                "--quiet", "--json", ev], check=True, capture_output=True)
                with open(ev) as f:
                    r["top1"] = json.load(f)["top1"]
                print(f"  {r['method']}: dev top-1 {r['top1']:.2f}", flush=True)
                save()
    else:
        print(f"calib_cost: {ti} not found; ViT-Ti part skipped (the shared models are needed)", flush=True)
    if not args.skip_deit and ("deit_s", "liu2021") not in done:
        d = random_deit_s(args.work_dir)
        print(f"DeiT-S (random weights) liu2021 W6A6, {args.deit_images} random images ...", flush=True)
        r = quantize(args.vitq, ["--model", d, "--random-calibration", str(args.deit_images), "--method", "liu2021",
                                 *extra], os.path.join(args.work_dir, "deit_s", "liu2021"), args.threads)
        r.update(model="deit_s", label="DeiT-S (random weights)", method="liu2021")
        print(f"  {r['calib_seconds']:.1f} s, {r['peak_rss_mb']:.0f} MB", flush=True)
        res["rows"].append(r)
    save()
    text = table(res)
    print(text)
    if args.results:
        replace_block(args.results, "calibcost", text.removesuffix("\n"))


if __name__ == "__main__":
    main()
