#!/usr/bin/python3
"""`vitq quantize --target`: the hardware description bounds the bit-widths, leaves out of the
method's recipe what it cannot run (and says so), refuses such options before calibrating and a
plan it cannot run before writing anything, and is recorded in the plan; each built-in target's
plan runs on its target (cpu-vnni and int8-only in vitq's integer runtime with the simulator's
predictions, onnx-qdq exported as ONNX QDQ).

On the bundled model with Debian's Fashion-MNIST (skips without it)."""
import json
import os

from cli_common import FMNIST, Cli, parse_args, read_json, require_fashion_mnist, write_json


def predictions(cli, what, model, *extra):
    out = cli.path(f"{what}.json")
    cli.expect(f"{what}: eval", ["eval", "--model", model, "--data", FMNIST, "--limit", "128", "-q", "--json", out,
                                 *extra], "ok")
    return read_json(out)["predictions"] if os.path.exists(out) else None


def operands(plan):
    for name, s in plan["sites"].items():
        for k in ("x", "w"):
            yield name, k, s[k]


def check_frontier_picture(cli, out, mp):
    """OUT/frontier.svg: one element per frontier, checked and uniform entry of the report, placed
    in the report's order of weight size (x) and KL (y, upward), the kept plan at its size."""
    import math
    import xml.etree.ElementTree as ET
    path = os.path.join(out, "frontier.svg")
    if not os.path.exists(path):
        cli.check(False, "mixed precision wrote frontier.svg")
        return
    root = ET.parse(path).getroot()
    by = {c: [e for e in root.iter() if e.get("class") == c] for c in ("frontier", "checked", "uniform", "chosen", "budget")}
    pts = [tuple(map(float, p.split(","))) for p in by["frontier"][0].get("points").split()] if by["frontier"] else []
    cli.check(len(pts) == len(mp["frontier"]) and len(by["checked"]) == len(mp["checked"]) and
              len(by["uniform"]) == len(mp["uniform_widths"]) and len(by["chosen"]) == 1 and len(by["budget"]) == 1,
              "frontier.svg: one mark per frontier point, checked point and uniform width; the kept plan; the budget")
    # Uniform widths: x increases with weight size; y (downward on screen) falls as KL rises.
    u = [(float(e.get("x")) + 5, float(e.get("y")) + 5) for e in by["uniform"]]
    w = [(p["weight_bits"], p["kl"]) for p in mp["uniform_widths"]]
    order_ok = all((u[i][0] < u[j][0]) == (w[i][0] < w[j][0]) and
                   (w[i][1] == w[j][1] or (u[i][1] < u[j][1]) == (w[i][1] > w[j][1]))
                   for i in range(len(u)) for j in range(len(u)) if i != j)
    # Log scale: equal KL ratios, equal pixel steps (uniform widths 2 apart against 1 apart).
    ratio_ok = True
    if len(u) >= 3 and all(k > 0 for _, k in w):
        per_decade = [(u[0][1] - u[i][1]) / math.log10(w[i][1] / w[0][1]) for i in range(1, len(u))
                      if abs(math.log10(w[i][1] / w[0][1])) > 1e-3]
        ratio_ok = max(per_decade) - min(per_decade) < 0.05 * abs(per_decade[0]) + 0.02
    chosen_x = float(by["chosen"][0].get("cx"))
    same_size = [x for (x, _), (wb, _) in zip(u, w) if wb == mp["chosen_weight_bits"]]
    cli.check(order_ok and ratio_ok and (not same_size or abs(same_size[0] - chosen_x) < 0.02),
              "frontier.svg: marks ordered by size and KL, KL on a log scale, the kept plan at its size",
              json.dumps({"uniform": u, "report": w, "chosen_x": chosen_x}))


def main():
    cli = Cli(parse_args())
    require_fashion_mnist()
    m = cli.model
    calib = os.path.join(FMNIST, "train-images-idx3-ubyte.gz")
    q = ["quantize", "--model", m, "--calib", calib, "--calib-size", "64"]

    # Refused before anything is loaded or written.
    never = cli.path("never")
    cli.expect("int8-only at 10 bits", q + ["--bits", "10", "--target", "int8-only", "-o", never], "usage",
               r"10-bit weights: target int8-only runs GEMMs of at most 8 bits")
    cli.expect("int8-only with --per-token", q + ["--bits", "8", "--per-token", "--target", "int8-only", "-o", never],
               "usage", r"per-token inputs \(--per-token\): target int8-only has static steps only")
    cli.expect("int8-only with --per-token-qk", q + ["--bits", "8", "--per-token-qk", "--target", "int8-only", "-o", never],
               "usage", r"per-token Q and K \(--per-token-qk\): target int8-only has static steps only")
    cli.expect("int8-only with --qwt", q + ["--bits", "8", "--qwt", "--target", "int8-only", "-o", never], "usage",
               r"QwT compensation .*: target int8-only runs no float GEMMs")
    cli.expect("onnx-qdq with a log2 softmax grid", q + ["--bits", "8", "--softmax-grid", "log2", "--target", "onnx-qdq",
                                                          "-o", never], "usage", r"log2 softmax grid.*onnx-qdq")
    cli.expect("minmax --per-head on int8-only", q + ["--bits", "8", "--method", "minmax", "--per-head", "--target",
                                                       "int8-only", "-o", never], "usage", r"--per-head: target int8-only")
    cli.expect("--mp-candidates over the target's width", q + ["--mixed-precision", "8", "--mp-candidates", "6,8,10",
                                                               "--target", "int8-only", "-o", never], "usage",
               r"--mp-candidates 10: target int8-only runs GEMMs of at most 8 bits")
    cli.expect("an unknown target", q + ["--bits", "8", "--target", "tpu9", "-o", never], "usage",
               r"--target tpu9: neither a built-in target \(cpu-vnni, int8-only, onnx-qdq\) nor a description file")
    bad = cli.path("my_npu.json")
    desc = read_json(os.path.join(cli.source, "targets", "int8-only.json"))
    del desc["inputs"]
    write_json(bad, desc)
    cli.expect("a description without 'inputs'", q + ["--bits", "8", "--target", bad, "-o", never], "model",
               r"my_npu\.json: inputs: is missing")
    # A description file without per-channel widths: ACIQ's bit allocation is refused after
    # calibrating, and nothing is written.
    npu2 = cli.path("npu_no_channel_bits.json")
    desc = read_json(os.path.join(cli.source, "targets", "int8-only.json"))
    desc["name"], desc["weights"]["channel_bits"] = "npu2", False
    write_json(npu2, desc)
    cli.expect("aciq's per-channel widths on a target without them", q + ["--bits", "4", "--method", "aciq", "--target",
                                                                        npu2, "-q", "-o", never], "usage",
               r"cannot run \(nothing was written\).*w: per-channel bit-widths; npu2 has one width per tensor")
    cli.check(not os.path.exists(never), "nothing was written by the refused runs")

    # The default target is vitq's runtime, recorded in the plan.
    cli.expect("default target", q + ["--bits", "8", "--method", "minmax", "--plan-only", "-q", "-o", cli.path("d")], "ok")
    cli.check(read_json(cli.path("d", "plan.json")).get("target", {}).get("name") == "cpu-vnni",
              "the plan records the default target cpu-vnni")

    # vitq's W4A4 recipe shaped by int8-only: runs, within the target's rules, in integers.
    out = cli.expect("vitq W4A4 on int8-only", q + ["--bits", "4", "--method", "vitq", "--target", "int8-only", "-o",
                                                    cli.path("npu")], "ok",
                     r"target\s+int8-only: a generic NPU",
                     r"changed for the target \(it cannot run them\): per-head attention steps, float "
                     r"softmax grid, per-token inputs, per-token Q and K, QwT compensation, MLP rotation")
    p = read_json(cli.path("npu", "plan.json"))
    bad_ops = [f"{n}.{k}" for n, k, o in operands(p)
               if o.get("bits", 0) > 8 or o.get("granularity") in ("token",) or "head_scales" in o or
               o.get("grid") in ("log2", "logsqrt2", "float")]
    cli.check(p["target"]["name"] == "int8-only" and not bad_ops and "compensation" not in p and
              not p.get("rotation", {}).get("mlp", False),
              "int8-only plan: at most 8 bits, static per-tensor activations, no QwT, no MLP rotation",
              json.dumps(bad_ops[:5]))
    a = predictions(cli, "npu_int", cli.path("npu"))
    b = predictions(cli, "npu_sim", cli.path("npu"), "--simulate")
    cli.check(a is not None and a == b, "int8-only plan: integer = simulated (128 images)")

    # Mixed precision within int8-only's widths: candidates 6..8.
    cli.expect("mixed precision 8 on int8-only", q[:-1] + ["32", "--mixed-precision", "8", "--method", "minmax",
                                                             "--target", "int8-only", "--plan-only", "-q", "-o",
                                                             cli.path("mp")], "ok")
    r = read_json(cli.path("mp", "report.json")) if os.path.exists(cli.path("mp", "report.json")) else {}
    cli.check(r.get("mixed_precision", {}).get("candidates") == [6, 7, 8],
              "mixed precision at 8 bits on int8-only: candidates 6, 7, 8",
              json.dumps(r.get("mixed_precision", {}).get("candidates")))

    check_frontier_picture(cli, cli.path("mp"), r.get("mixed_precision", {}))

    # onnx-qdq: vitq's W4A4 recipe with symmetric weights; the plan keeps the rules, runs in
    # integers as simulated, and exports as ONNX QDQ.
    cli.expect("vitq W4A4 on onnx-qdq", q + ["--bits", "4", "--method", "vitq", "--target", "onnx-qdq", "-o",
                                             cli.path("qdq")], "ok",
               r"changed for the target \(it cannot run them\): per-head attention steps, asymmetric weights "
               r"\(symmetric per-channel grids instead\), float softmax grid, per-token inputs")
    p = read_json(cli.path("qdq", "plan.json"))
    bad_ops = [f"{n}.{k}" for n, k, o in operands(p)
               if o.get("bits", 0) > 8 or o.get("granularity") == "token" or "head_scales" in o or
               o.get("grid") in ("log2", "logsqrt2", "float")] + [n for n, e in p["sites"].items() if "weight_offset" in e]
    cli.check(p["target"]["name"] == "onnx-qdq" and not bad_ops and
              p["settings"].get("weights", "").startswith("per-channel symmetric"),
              "onnx-qdq plan: symmetric weights, per-tensor activations, at most 8 bits", json.dumps(bad_ops[:5]))
    a = predictions(cli, "qdq_int", cli.path("qdq"))
    b = predictions(cli, "qdq_sim", cli.path("qdq"), "--simulate")
    cli.check(a is not None and a == b, "onnx-qdq plan: integer = simulated (128 images)")
    cli.expect("its ONNX export", ["export", "--model", cli.path("qdq"), "--onnx", cli.path("qdq.onnx")], "ok",
               r"activation operands as QDQ")
    cli.expect("aciq W8A8 on onnx-qdq: without its bias correction", q + ["--bits", "8", "--method", "aciq", "--target",
                                                                         "onnx-qdq", "--plan-only", "-o",
                                                                         cli.path("aq")], "ok",
               r"changed for the target \(it cannot run them\): bias correction \(its weight offsets\)")
    cli.finish()


if __name__ == "__main__":
    main()
