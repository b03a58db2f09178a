#!/usr/bin/python3
"""Mixed precision under a budget the user states (`vitq quantize --mixed-precision B --mp-budget
KIND=VALUE`) and the per-site latency table it prices widths with (`vitq bench --latency-table`):
the table's file format and merging; the kept plan's widths, priced by the table written here from
the plan itself, within a latency budget; its weights within a size budget; its KL within an
accuracy floor as the report measured it; a latency budget without a table measures one; and
errors that name the option, file and field.

On the bundled model with Debian's Fashion-MNIST (skips without it)."""
import json
import os

from cli_common import FMNIST, Cli, parse_args, read_json, require_fashion_mnist, write_json


def module_bits(plan, depth):
    """The weight width of each MSA (2i) and MLP (2i+1) module of the plan."""
    bits = [0] * (2 * depth)
    for name, s in plan["sites"].items():
        parts = name.split(".")
        if parts[0] != "blocks":
            continue
        block, kind = int(parts[1]), parts[-1]
        attn = parts[2] == "attn"
        bits[2 * block + (0 if attn else 1)] = s["w"]["bits"]
    return bits


def entry_for(table, bits):
    """The table entry pricing `bits`: its own, else the nearest of the same 8-bit plane count."""
    same = [e for e in table["widths"] if e["bits"] == bits]
    if same:
        return same[0]
    planes = lambda b: 2 if b > 8 else 1
    near = sorted((abs(e["bits"] - bits), e["bits"], e) for e in table["widths"] if planes(e["bits"]) == planes(bits))
    return near[0][2] if near else None


def predicted_ms(table, bits, target):
    """The table's latency of a choice: the rest at the target width plus each module at its width."""
    t = entry_for(table, target)["rest"]
    for m, b in enumerate(bits):
        e = entry_for(table, b)
        t += e["qkv"] + e["attention"] + e["proj"] if m % 2 == 0 else e["fc1"] + e["fc2"]
    return t


def weight_bits(plan, depth, params):
    return sum(p * b for p, b in zip(params, module_bits(plan, depth)))


def main():
    cli = Cli(parse_args())
    require_fashion_mnist()
    m = cli.model
    cfg = read_json(os.path.join(m, "config.json"))["model_args"]
    depth, d = cfg["depth"], cfg["embed_dim"]
    hidden = int(d * cfg["mlp_ratio"])
    params = [d * 3 * d + d * d, d * hidden + hidden * d] * depth  # qkv + proj, fc1 + fc2 per block
    calib = os.path.join(FMNIST, "train-images-idx3-ubyte.gz")
    q = ["quantize", "--model", m, "--calib", calib, "--calib-size", "32", "--method", "minmax", "--plan-only", "-q"]
    never = cli.path("never")

    # --- the latency table -------------------------------------------------------------------
    table = cli.path("latency.json")
    cli.expect("bench --latency-table from the checkpoint", ["bench", "--model", m, "--latency-table", table, "--widths",
                                                             "8,10", "--batch", "4", "--iters", "3"], "ok",
               r"8 bits: qkv .* ms/image per block", r"10 bits:", r"wrote .*latency\.json \(2 widths, batch 4")
    t = read_json(table) if os.path.exists(table) else {}
    fields = ("qkv", "attention", "proj", "fc1", "fc2", "rest", "total")
    cli.check(t.get("format") == "vitq-latency-table" and t.get("depth") == depth and t.get("batch") == 4 and
              [e["bits"] for e in t.get("widths", [])] == [8, 10] and
              all(all(e[f] > 0 for f in fields) for e in t.get("widths", [])),
              "latency table: the model's shape, batch, widths 8 and 10, a positive time per site", json.dumps(t)[:800])
    # From a quantized model: its width is added to the same file.
    cli.expect("a uniform 6-bit model", q[:-2] + ["--bits", "6", "-q", "-o", cli.path("w6")], "ok")
    cli.expect("bench --latency-table from a quantized model", ["bench", "--model", cli.path("w6"), "--latency-table",
                                                                table, "--batch", "4", "--iters", "3"], "ok",
               r"6 bits:", r"\(3 widths")
    t = read_json(table)
    cli.check([e["bits"] for e in t["widths"]] == [6, 8, 10], "the 6-bit entry added to the table",
              json.dumps([e["bits"] for e in t["widths"]]))
    cli.expect("another batch into the same table", ["bench", "--model", cli.path("w6"), "--latency-table", table,
                                                     "--batch", "2", "--iters", "1"], "usage",
               r"latency\.json: measured at batch 4 .* this run is at batch 2")

    # --- a latency budget --------------------------------------------------------------------
    t8, t10 = entry_for(t, 8), entry_for(t, 10)
    uniform8 = predicted_ms(t, [8] * (2 * depth), 8)
    msa_step = (t10["qkv"] + t10["attention"] + t10["proj"]) - (t8["qkv"] + t8["attention"] + t8["proj"])
    budget = uniform8 + 1.5 * msa_step
    out = cli.path("lat")
    cli.expect("mixed precision 8 within a latency budget", q + ["--mixed-precision", "8", "--mp-budget",
                                                                 f"latency={budget:.6f}", "--latency-table", table,
                                                                 "--mp-min-gain-se", "0", "-o", out], "ok")
    if os.path.exists(os.path.join(out, "plan.json")):
        plan, mp = read_json(os.path.join(out, "plan.json")), read_json(os.path.join(out, "report.json"))["mixed_precision"]
        bits = module_bits(plan, depth)
        ms = predicted_ms(t, bits, 8)
        cli.check(ms <= budget + 1e-9 and abs(ms - mp["chosen_latency_ms"]) < 1e-9 and mp["budget"]["kind"] == "latency",
                  "latency budget: the kept plan's modules priced by the table within it, as the report says",
                  json.dumps({"bits": bits, "ms": ms, "budget": budget, "report": mp.get("chosen_latency_ms")}))
        cli.check(all(p["latency_ms"] <= budget + 1e-9 for p in mp["frontier"]) and
                  all(abs(p["latency_ms"] - predicted_ms(t, p["bits"], 8)) < 1e-9 for p in mp["checked"]),
                  "latency budget: every frontier point within it; checked points priced as the table prices them")
        cli.check(read_json(os.path.join(out, "latency_table.json"))["widths"] == t["widths"],
                  "latency budget: OUT/latency_table.json is the table given (nothing was missing)")
        svg = open(os.path.join(out, "frontier.svg")).read() if os.path.exists(os.path.join(out, "frontier.svg")) else ""
        cli.check("predicted latency of the integer model" in svg and 'class="budget"' in svg,
                  "latency budget: frontier.svg plots latency, with the budget")
    cli.expect("a latency budget below the patch embedding and head", q + ["--mixed-precision", "8", "--mp-budget",
                                                                           "latency=1e-9", "--latency-table", table,
                                                                           "-o", never], "usage",
               r"latency=1e-09: below what the patch embedding and head alone take")

    # Without a table: the uniform plans are measured here and the table written beside the plan. (A
    # budget no timing misses: one priced by the earlier table can be below this run's own timings
    # when the machine is busy.)
    out = cli.path("lat_measured")
    cli.expect("a latency budget, the table measured here", q + ["--mixed-precision", "8", "--mp-candidates", "8,10",
                                                                 "--mp-budget", "latency=1000000",
                                                                 "--latency-batch", "2", "-o", out], "ok")
    lt = read_json(os.path.join(out, "latency_table.json")) if os.path.exists(os.path.join(out, "latency_table.json")) else {}
    r = read_json(os.path.join(out, "report.json")) if os.path.exists(os.path.join(out, "report.json")) else {}
    cli.check([e["bits"] for e in lt.get("widths", [])] == [8, 10] and lt.get("batch") == 2 and
              "measured here" in r.get("mixed_precision", {}).get("latency_table", ""),
              "measured here: OUT/latency_table.json with 8 and 10 bits at batch 2, the report says so",
              json.dumps(lt)[:600])

    # --- a size budget -----------------------------------------------------------------------
    mb = sum(params) * 5 / 8e6  # the weight size of uniform W5 (between the candidates 4..8 of W6)
    out = cli.path("size")
    cli.expect("mixed precision 6 within a size budget", q + ["--mixed-precision", "6", "--mp-budget", f"size={mb:.6f}",
                                                              "-o", out], "ok")
    if os.path.exists(os.path.join(out, "plan.json")):
        plan, mp = read_json(os.path.join(out, "plan.json")), read_json(os.path.join(out, "report.json"))["mixed_precision"]
        wb = weight_bits(plan, depth, params)
        cli.check(wb <= mb * 8e6 + 1 and wb == mp["chosen_weight_bits"] and mp["chosen"] == "mixed",
                  "size budget below uniform W6: a mixed plan whose block weights fit it",
                  json.dumps({"weight_bits": wb, "budget": mb * 8e6, "report": mp.get("chosen_weight_bits")}))

    # --- an accuracy floor -------------------------------------------------------------------
    out = cli.path("floor")
    cli.expect("mixed precision 6 with a KL floor", q + ["--mixed-precision", "6", "--mp-budget", "kl=0.02", "--mp-holdout",
                                                         "0", "-o", out], "ok")
    if os.path.exists(os.path.join(out, "report.json")):
        mp = read_json(os.path.join(out, "report.json"))["mixed_precision"]
        final = mp.get("final", "")
        kept = (mp["recalibrated_kl"] if final.startswith("recalibrated") else
                mp["chosen_kl_composed"] if final.startswith("composed") else mp["uniform_kl"])
        cheaper = [c for c in mp["checked"] if c["kl"] <= 0.02 and c["weight_bits"] < mp["chosen_weight_bits"]]
        cli.check(kept <= 0.02 and not cheaper and mp["budget"]["kind"] == "kl",
                  "KL floor: the kept plan measured within it; no cheaper measured point met it",
                  json.dumps({"kept": kept, "final": final, "cheaper": cheaper}))
    cli.expect("an unreachable floor", q + ["--mixed-precision", "6", "--mp-budget", "kl=1e-12", "-o", never], "usage",
               r"no allocation of the candidate widths reaches KL <= 1e-12")

    # --- errors --------------------------------------------------------------------------------
    cli.expect("an unknown budget kind", q + ["--mixed-precision", "6", "--mp-budget", "speed=3", "-o", never], "usage",
               r"--mp-budget 'speed=3': the kind must be size, latency or kl")
    cli.expect("a budget that is not a number", q + ["--mixed-precision", "6", "--mp-budget", "size=4MB", "-o", never],
               "usage", r"'4MB' is not a positive number")
    cli.expect("--mp-budget without --mixed-precision", q + ["--bits", "6", "--mp-budget", "size=1", "-o", never], "usage",
               r"--mp-budget bounds the allocation of --mixed-precision")
    cli.expect("a floor with the nuclear allocation", q + ["--mixed-precision", "6", "--mp-sensitivity", "nuclear",
                                                           "--mp-budget", "kl=0.1", "-o", never], "usage",
               r"it needs --mp-sensitivity kl")
    cli.expect("--latency-table without --mixed-precision", q + ["--bits", "6", "--latency-table", table, "-o", never],
               "usage", r"--latency-table prices the widths of --mixed-precision")
    bad = cli.path("bad_table.json")
    tb = json.loads(json.dumps(t))
    tb["widths"][1]["fc1"] = "fast"
    write_json(bad, tb)
    cli.expect("a malformed table", q + ["--mixed-precision", "8", "--mp-budget", "latency=1", "--latency-table", bad,
                                         "-o", never], "model", r"bad_table\.json: latency table field 'widths\[1\]\.fc1'")
    other = cli.path("other_table.json")
    tb = json.loads(json.dumps(t))
    tb["depth"] = depth + 1
    write_json(other, tb)
    cli.expect("a table of another model", q + ["--mixed-precision", "8", "--mp-budget", "latency=1", "--latency-table",
                                                other, "-o", never], "usage",
               rf"other_table\.json: latency table field 'depth' is {depth + 1} but the model has {depth}")
    cli.check(not os.path.exists(never), "nothing was written by the refused runs")
    cli.finish()


if __name__ == "__main__":
    main()
