#!/usr/bin/python3
"""`vitq quantize --gelu-table BITS` and `--softmax-table BITS`: the plan gets one GELU table per
quantized fc1 site and the softmax exponent table (format 5), the integer runtime gives the
simulator's predictions with them (GELU: the direct path — fc2 codes from the table — with
minmax's per-tensor inputs, the float-table path with vitq's per-token inputs), the tables change
the model measurably but little, the targets that cannot run them refuse the options before
anything is written, and the ONNX export says it wrote the tables (their agreement with ONNX
Runtime: tests/parity/test_onnx_export.py).

On the bundled model with Debian's Fashion-MNIST (skips without it)."""
import os

from cli_common import FMNIST, Cli, parse_args, read_json, require_fashion_mnist


def predictions(cli, what, model, *extra):
    out = cli.path(f"{what}.json")
    cli.expect(f"{what}: eval", ["eval", "--model", model, "--data", FMNIST, "--limit", "256", "-q", "--json", out,
                                 *extra], "ok")
    return read_json(out) if os.path.exists(out) else None


def main():
    cli = Cli(parse_args())
    require_fashion_mnist()
    m = cli.model
    calib = os.path.join(FMNIST, "train-images-idx3-ubyte.gz")
    q = ["quantize", "--model", m, "--calib", calib, "--calib-size", "64"]

    never = cli.path("never")
    cli.expect("onnx-qdq with --gelu-table", q + ["--bits", "8", "--gelu-table", "8", "--target", "onnx-qdq", "-o", never],
               "usage", r"--gelu-table 8: target onnx-qdq runs GELU in float only")
    cli.expect("int8-only with a 10-bit table", q + ["--bits", "8", "--gelu-table", "10", "--target", "int8-only", "-o",
                                                     never], "usage", r"target int8-only runs GELU tables of at most 8 bits")
    cli.expect("a 3-bit table", q + ["--bits", "8", "--gelu-table", "3", "-o", never], "usage", r"--gelu-table")
    cli.expect("onnx-qdq with --softmax-table", q + ["--bits", "8", "--softmax-table", "10", "--target", "onnx-qdq",
                                                    "-o", never], "usage",
               r"--softmax-table 10: target onnx-qdq runs the softmax in float only")
    cli.expect("int8-only with a 10-bit softmax table", q + ["--bits", "8", "--softmax-table", "10", "--target",
                                                            "int8-only", "-o", never], "usage",
               r"target int8-only runs softmax exponent tables of at most 8 bits")
    cli.check(not os.path.exists(never), "nothing was written by the refused runs")

    depth = read_json(os.path.join(m, "config.json")).get("depth") or 6
    for method, bits in (("minmax", "8"), ("vitq", "6")):
        plain, table = cli.path(f"{method}_plain"), cli.path(f"{method}_table")
        cli.expect(f"{method} W{bits}A{bits}", q + ["--method", method, "--bits", bits, "-q", "-o", plain], "ok")
        cli.expect(f"{method} W{bits}A{bits} --gelu-table 8 --softmax-table 10",
                   q + ["--method", method, "--bits", bits, "--gelu-table", "8", "--softmax-table", "10", "-q", "-o",
                        table], "ok")
        p = read_json(os.path.join(table, "plan.json"))
        t = p.get("gelu_tables", {})
        # (format 8 for vitq: its W6A6 recipe has per-token inputs and per-token Q and K, docs/FORMAT.md)
        cli.check(p.get("format_version") == (8 if method == "vitq" else 5) and sorted(t) == sorted(f"blocks.{i}.mlp.fc1" for i in range(depth)) and
                  all(e["bits"] == 8 and e["scale"] > 0 and e["lo"] < 0 for e in t.values()) and
                  p["settings"].get("gelu_table_bits") == 8 and p.get("softmax_table") == {"bits": 10, "range": 16.0},
                  f"{method}: one 8-bit GELU table per block, covering negative inputs, and the softmax table, in a "
                  "format-5 (or 8: per-token Q and K) plan", str(t)[:400])
        cli.check("gelu_tables" not in read_json(os.path.join(plain, "plan.json")), f"{method}: no tables unless asked")
        a = predictions(cli, f"{method}_int", table)
        b = predictions(cli, f"{method}_sim", table, "--simulate")
        c = predictions(cli, f"{method}_plain_sim", plain, "--simulate")
        if a and b and c:
            cli.check(a["predictions"] == b["predictions"], f"{method} with tables: integer = simulated (256 images)")
            # the table changes the model (some logits), not its accuracy much (same bound as W8A8 vs FP32 here)
            same = sum(x == y for x, y in zip(b["predictions"], c["predictions"]))
            cli.check(same >= 0.95 * len(c["predictions"]) and abs(a["top1"] - c["top1"]) <= 2.0,
                      f"{method}: with tables {a['top1']:.2f} % vs {c['top1']:.2f} %, {same}/256 same predictions")
    cli.expect("ONNX export of a plan with tables", ["export", "--model", cli.path("minmax_table"), "--onnx",
                                                          cli.path("t.onnx")], "ok", r"GELU tables in \d+ blocks",
               r"the softmax exponent table")
    cli.check(os.path.exists(cli.path("t.onnx")) and os.path.getsize(cli.path("t.onnx")) > 0,
              "the ONNX file is written")
    cli.finish()


if __name__ == "__main__":
    main()
