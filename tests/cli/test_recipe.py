#!/usr/bin/python3
"""`vitq quantize --method vitq`: the method's recipe sets the driver options the command line
did not give, and says so; every part can be overridden; the plan records what was used; the
quantized model directory runs in integers with the simulator's predictions.

On the bundled model with Debian's Fashion-MNIST (skips without it): 64 calibration images,
128 test images."""
import json
import os

from cli_common import FMNIST, Cli, parse_args, read_json, require_fashion_mnist

def predictions(cli, what, model, data, *extra):
    out = cli.path(f"{what}.json")
    cli.expect(f"{what}: eval", ["eval", "--model", model, "--data", data, "--limit", "128", "-q", "--json", out, *extra],
               "ok")
    return read_json(out)["predictions"] if os.path.exists(out) else None


def main():
    cli = Cli(parse_args())
    require_fashion_mnist()
    m = cli.model
    calib = os.path.join(FMNIST, "train-images-idx3-ubyte.gz")
    q = ["quantize", "--model", m, "--calib", calib, "--calib-size", "64", "--method", "vitq"]

    out = cli.expect("vitq W4A4: the recipe is applied and printed", q + ["--bits", "4", "-o", cli.path("v4")], "ok",
                     r"recipe\s+float softmax grid, per-token inputs, per-token Q and K, patch embedding input at 8 bits, token ranges "
                     r"clipped to 0.95, token ranges per 32 channels, GPTQ weight rounding, QwT compensation, rotation, MLP "
                     r"rotation")
    plan = read_json(cli.path("v4", "plan.json"))
    s = plan["settings"]
    cli.check(s.get("compensation", {}).get("method") == "qwt" and len(plan.get("compensation", {}).get("blocks", [])) > 0,
              "W4A4: the default compensation (closed-form: QwT) is in the plan", json.dumps(s.get("compensation")))
    cli.check(s.get("softmax_grid") == "float" and s.get("per_token_inputs") is True and
              s.get("patch_embed_abits") == 8 and s.get("weight_rounding", {}).get("method") == "gptq",
              "W4A4 plan settings record the recipe's driver options", json.dumps(s))
    cli.check(plan.get("rotation") == {"seed": 0, "residual": True, "heads": True, "mlp": True},
              "W4A4 plan records the rotation", json.dumps(plan.get("rotation")))
    qkv = plan["sites"]["blocks.0.attn.qkv"]
    cli.check(abs(qkv["x"].get("token_clip", 1) - 0.95) < 1e-6 and abs(s.get("token_clip", 1) - 0.95) < 1e-6 and
              plan["format_version"] == 8, "W4A4: the token clip ratio 0.95 on per-token inputs (plan format 8)",
              json.dumps(qkv["x"]))
    qk = plan["sites"]["blocks.0.attn.matmul_qk"]
    cli.check(s.get("per_token_qk") is True and all(qk[o].get("granularity") == "token" and "scale" not in qk[o] and
                                                   "head_scales" not in qk[o] for o in ("x", "w")),
              "W4A4: Q and K of matmul_qk per token (no stored steps)", json.dumps(qk)[:300])
    # Channel groups of 32 at 4 bits (qkv: 64 inputs, fc2: 128).
    fc2 = plan["sites"]["blocks.0.mlp.fc2"]
    cli.check(s.get("token_group") == 32 and fc2["x"].get("token_group") == 32 and qkv["x"].get("token_group") == 32,
              "W4A4: per-token ranges per 32 channels on fc2 and qkv", json.dumps(fc2["x"]))
    cli.check(qkv["x"].get("granularity") == "token" and qkv.get("weight_codes") is True and "weight_offset" in qkv,
              "qkv: per-token input, GPTQ codes, per-channel offsets", json.dumps(qkv)[:300])
    av = plan["sites"]["blocks.0.attn.matmul_av"]
    cli.check(av["x"].get("grid") == "float" and len(av["w"].get("head_scales", [])) == 4,
              "matmul_av: float grid for P, per-head V steps", json.dumps(av)[:300])
    cli.check(plan["sites"]["patch_embed"]["x"]["bits"] == 8, "patch embedding input at 8 bits")
    # The directory in integers and the same plan simulated give the same predictions.
    a = predictions(cli, "v4_int", cli.path("v4"), FMNIST)
    b = predictions(cli, "v4_sim", cli.path("v4"), FMNIST, "--simulate")
    c = predictions(cli, "v4_plan", m, FMNIST, "--plan", cli.path("v4", "plan.json"))
    cli.check(a is not None and a == b == c, "W4A4: integer = simulated directory = simulated plan (128 images)")
    # --reference: the paired measures against the FP32 model.
    out = cli.expect("eval --reference FP32 model", ["eval", "--model", cli.path("v4"), "--data", FMNIST, "--limit", "64",
                     "-q", "--reference", m, "--json", cli.path("ref.json")], "ok",
                     r"vs ref\s+agreement \d+\.\d+ %\s+\(\d+/64 same top-1")
    r = read_json(cli.path("ref.json"))["reference"]
    cli.check(0 < r["agreement"] <= 100 and r["kl_mean"] > 0, "W4A4 against FP32: some agreement, positive KL", json.dumps(r))
    cli.expect("eval --reference itself", ["eval", "--model", m, "--data", FMNIST, "--limit", "16", "-q", "--reference", m],
               "ok", r"agreement 100\.00 %\s+\(16/16.*KL\(ref \|\| model\) 0\.00000")
    cli.expect("eval --reference a quantized directory", ["eval", "--model", m, "--data", FMNIST, "--limit", "4", "-q",
               "--reference", cli.path("v4")], "usage", "quantized model directory")

    cli.expect("vitq W8A8: no rotation at 8 bits", q + ["--bits", "8", "--plan-only", "-o", cli.path("v8")], "ok",
               r"recipe\s+float softmax grid, per-token inputs, patch embedding input at 8 bits, GPTQ weight rounding "
               r"\(the method's")
    cli.check("rotation" not in read_json(cli.path("v8", "plan.json")), "W8A8 plan has no rotation")

    # Every part overridden on the command line.
    cli.expect("vitq W4A4 with every recipe part overridden",
               q + ["--bits", "4", "--plan-only", "--softmax-grid", "unsigned", "--no-per-token", "--no-per-token-qk",
                    "--patch-embed-abits",
                    "4", "--weight-rounding", "nearest", "--no-rotate", "--no-rotate-mlp", "--no-qwt", "--token-clip", "1",
                    "--token-group", "0",
                    "-o", cli.path("v4o")],
               "ok")
    p = read_json(cli.path("v4o", "plan.json"))
    s = p["settings"]
    cli.check("rotation" not in p and "per_token_inputs" not in s and "per_token_qk" not in s and "weight_rounding" not in s and
              "softmax_grid" not in s and "recipe" not in s and "compensation" not in s and "compensation" not in p and
              "token_clip" not in s and "token_clip" not in json.dumps(p["sites"]) and "token_group" not in s and
              "token_group" not in json.dumps(p["sites"]),
              "overridden parts are absent from the plan", json.dumps(s))
    cli.expect("--token-clip without per-token inputs warns", q + ["--bits", "4", "--plan-only", "--compensate", "none",
                                                                 "--no-per-token", "--token-clip", "0.9", "-q", "-o",
                                                                 cli.path("tcw")], "ok",
               r"warning: --token-clip 0\.9 has no effect without per-token inputs")
    cli.expect("--token-group without per-token inputs warns", q + ["--bits", "4", "--plan-only", "--compensate",
                                                                  "none", "--no-per-token", "--token-group", "16", "-q",
                                                                  "-o", cli.path("tgw")], "ok",
               r"warning: --token-group 16 has no effect without per-token inputs")
    # --compensate: the levels, and a bad one.
    cli.expect("vitq --compensate none at W4A4", q + ["--bits", "4", "--plan-only", "--compensate", "none", "-q", "-o",
                                                      cli.path("cnone")], "ok")
    cli.check("compensation" not in read_json(cli.path("cnone", "plan.json")), "--compensate none: no compensation")
    cli.expect("vitq --compensate reconstruct (20 steps)",
               q + ["--bits", "6", "--plan-only", "--compensate", "reconstruct", "--recon-iters", "20", "-o",
                    cli.path("crec")], "ok", r"blocks\.0 reconstructed: block output MSE")
    pr = read_json(cli.path("crec", "plan.json"))
    rr = read_json(cli.path("crec", "report.json"))
    # Groups of 64 at 6 bits: fc2 (128 inputs) grouped, qkv's rows of 64 whole.
    cli.check(pr["settings"].get("token_group") == 64 and pr["sites"]["blocks.0.mlp.fc2"]["x"].get("token_group") == 64
              and "token_group" not in pr["sites"]["blocks.0.attn.qkv"]["x"],
              "W6A6: per-token ranges per 64 channels on fc2, whole rows of 64 on qkv",
              json.dumps(pr["sites"]["blocks.0.mlp.fc2"]["x"]))
    qk6 = pr["sites"]["blocks.0.attn.matmul_qk"]
    cli.check(pr["settings"].get("per_token_qk") is True and
              all(qk6[o].get("granularity") == "token" and qk6[o]["bits"] == 6 for o in ("x", "w")),
              "W6A6: Q and K per token (the recipe at 6-bit activations and fewer)", json.dumps(qk6)[:300])
    cli.check(pr["settings"].get("reconstruction", {}).get("iters") == 20 and "compensation" in pr and
              all("reconstruction" in v and "seconds" in v["reconstruction"] for v in rr["block_step"].values()),
              "--compensate reconstruct: reconstruction (20 steps, time per block) and QwT in the plan and report")
    cli.expect("vitq --compensate bogus", q + ["--bits", "4", "--compensate", "bogus", "-o", cli.path("never")], "usage",
               "--compensate must be none, closed-form, reconstruct or auto")
    cli.check(p["sites"]["blocks.0.attn.matmul_av"]["x"].get("unsigned") is True and
              "granularity" not in p["sites"]["blocks.0.attn.qkv"]["x"] and
              "granularity" not in json.dumps(p["sites"]["blocks.0.attn.matmul_qk"]) and p["sites"]["patch_embed"]["x"]["bits"] == 4,
              "overridden formats reach the sites")
    cli.expect("--unsigned-softmax contradicts --softmax-grid float",
               q + ["--bits", "4", "--unsigned-softmax", "--softmax-grid", "float", "-o", cli.path("never")], "usage",
               "contradict")
    # The driver options work with any method.
    cli.expect("minmax with --per-token --softmax-grid log2 --weight-rounding gptq --rotate",
               ["quantize", "--model", m, "--calib", calib, "--calib-size", "32", "--method", "minmax", "--bits", "6",
                "--per-token", "--softmax-grid", "log2", "--weight-rounding", "gptq", "--rotate", "--plan-only", "-q",
                "-o", cli.path("mm")], "ok")
    p = read_json(cli.path("mm", "plan.json"))
    cli.check(p["sites"]["blocks.0.mlp.fc2"].get("weight_codes") is True and
              p["sites"]["blocks.0.attn.matmul_av"]["x"].get("grid") == "log2" and
              p.get("rotation", {}).get("mlp") is False, "minmax + driver options reach the plan")
    # Run-time (per-token) steps are for codes of at most 8 bits: at 10 bits the driver keeps static
    # steps, says so, and the plan it writes reads back (it did not: the reader refused bits 10).
    out = cli.expect("--bits 10 --per-token --per-token-qk: static steps, a note, a readable plan",
                     ["quantize", "--model", m, "--calib", calib, "--calib-size", "16", "--method", "minmax",
                      "--bits", "10", "--per-token", "--per-token-qk", "-o", cli.path("w10pt")], "ok",
                     r"note: per-token steps \(--per-token, --per-token-qk\) are for sites of at most 8 bits")
    p = read_json(cli.path("w10pt", "plan.json"))
    cli.check(all("granularity" not in sp["x"] and "granularity" not in sp["w"] and "scale" in sp["x"]
                  for sp in p["sites"].values()), "10 bits: every site has a static input step",
              json.dumps(p["sites"]["blocks.0.attn.matmul_qk"]))
    predictions(cli, "10-bit plan with --per-token", cli.path("w10pt"), FMNIST)
    # The ridge update and the log√2 grid: in the plan, and the quantized model runs in integers
    # with the simulator's predictions.
    cli.expect("percentile with --ridge-update --softmax-grid logsqrt2 --per-token",
               ["quantize", "--model", m, "--calib", calib, "--calib-size", "64", "--method", "percentile", "--bits",
                "6", "--ridge-update", "--softmax-grid", "logsqrt2", "--per-token", "-q", "-o", cli.path("ridge")], "ok")
    p = read_json(cli.path("ridge", "plan.json"))
    fc2 = p["sites"]["blocks.0.mlp.fc2"]
    cli.check(p["settings"].get("ridge_update", {}).get("target") == "local" and fc2.get("weight_codes") is True and
              len(fc2.get("bias_correction", [])) > 0 and
              p["sites"]["blocks.0.attn.matmul_av"]["x"].get("grid") == "logsqrt2",
              "ridge update: codes, bias correction and its settings in the plan; the log√2 grid reaches matmul_av",
              json.dumps(p["settings"]))
    pi = predictions(cli, "ridge integer", cli.path("ridge"), FMNIST)
    ps = predictions(cli, "ridge simulated", cli.path("ridge"), FMNIST,
                     "--simulate")
    cli.check(pi is not None and pi == ps, "ridge update + log√2 grid: integer predictions = simulated (128 images)")
    # QwT compensation: in the plan (format 3, its companion file), and run by the integer runtime.
    cli.expect("minmax with --qwt", ["quantize", "--model", m, "--calib", calib, "--calib-size", "64", "--method",
                                     "minmax", "--bits", "4", "--per-token", "--qwt", "-q", "-o", cli.path("qwt")],
               "ok")
    p = read_json(cli.path("qwt", "plan.json"))
    r = read_json(cli.path("qwt", "report.json"))
    comp = p.get("compensation", {})
    cli.check(p["format_version"] == 7 and p["settings"].get("compensation", {}).get("method") == "qwt" and
              len(comp.get("blocks", [])) > 0 and
              os.path.exists(cli.path("qwt", comp.get("file", "missing"))) and
              all("r2" in v["compensation"] for v in r.get("block_step", {}).values()),
              "QwT (per-token inputs: format 7), its blocks and file in the plan, R² per block in the report", json.dumps(comp))
    pi = predictions(cli, "qwt integer", cli.path("qwt"), FMNIST)
    ps = predictions(cli, "qwt simulated", cli.path("qwt"), FMNIST, "--simulate")
    cli.check(pi is not None and pi == ps, "QwT: integer predictions = simulated (128 images)")
    cli.finish()


if __name__ == "__main__":
    main()
