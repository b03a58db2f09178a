"""Issue class: non-finite numbers never become a result.

A checkpoint with NaN/Inf weights is refused (exit 3) by every command that loads it, naming
the tensor, unless --allow-non-finite; finite weights whose activations overflow are reported
with the site where the first NaN/Inf appears, by eval and by quantize (before any plan is
written); with --allow-non-finite such images count as wrong, never as a top-5 hit."""
import json
import os
import shutil
import struct

from cli_common import Cli, parse_args, read_json


def set_values(path, tensor, values_at):
    """Overwrites elements of an F32 tensor of a safetensors file: values_at(flat index array
    length n) -> {index: value}."""
    with open(path, "r+b") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        info = header[tensor]
        assert info["dtype"] == "F32", info
        begin, end = info["data_offsets"]
        count = (end - begin) // 4
        for i, v in values_at(count).items():
            f.seek(8 + n + begin + 4 * i)
            f.write(struct.pack("<f", v))


def main():
    args = parse_args()
    cli = Cli(args)
    data = cli.image_folder("data", per_class=2)
    nan = float("nan")
    inf = float("inf")
    cases = [("nan_qkv", "blocks.0.attn.qkv.weight", lambda n: {n // 2: nan}),
             ("inf_head_bias", "head.bias", lambda n: {0: inf}),
             ("neg_inf_pos_embed", "pos_embed", lambda n: {n - 1: -inf})]
    for name, tensor, vals in cases:
        m = cli.copy_model(name)
        set_values(os.path.join(m, "model.safetensors"), tensor, vals)
        for cmd in (["eval", "--model", m, "--data", data, "-q"],
                    ["quantize", "--model", m, "--calib", data, "--method", "minmax", "--bits", "8", "-q",
                     "-o", cli.path(name + "_q")],
                    ["info", "--model", m]):
            cli.expect(f"{cmd[0]} with {name}", cmd, "model", tensor.replace(".", r"\."), r"non-finite",
                       r"model\.safetensors")
        cli.check(not os.path.exists(cli.path(name + "_q")), f"{name}: quantize wrote no output")

    # Allowed: every logit NaN -> every image wrong (top-1 and top-5 0, not top-5 100 %).
    m = cli.path("nan_qkv")
    out = cli.expect("eval --allow-non-finite with a NaN weight", ["eval", "--model", m, "--data", data, "-q",
                                                                  "--allow-non-finite", "--json",
                                                                  cli.path("nan.json")], "ok", r"non-finite")
    if os.path.exists(cli.path("nan.json")):
        r = read_json(cli.path("nan.json"))
        cli.check(r["images"] == 4 and r["top1_correct"] == 0 and r["top5_correct"] == 0 and r["non_finite"] == 4
                  and all(p == -1 for p in r["predictions"]),
                  "NaN logits count as wrong in top-1 and top-5",
                  json.dumps({k: r[k] for k in ("images", "top1_correct", "top5_correct", "non_finite")}))
    # A NaN in the head bias of one class only: that class can never be a hit.
    m = cli.copy_model("nan_one_class")
    set_values(os.path.join(m, "model.safetensors"), "head.bias", lambda n: {0: nan})
    cli.expect("eval with one NaN class logit, allowed", ["eval", "--model", m, "--data", data, "-q",
                                                          "--allow-non-finite", "--json", cli.path("one.json")], "ok")
    if os.path.exists(cli.path("one.json")):
        r = read_json(cli.path("one.json"))
        cli.check(r["top5_correct"] == 0 and r["non_finite"] == 4, "a NaN logit never counts as a top-k hit",
                  json.dumps(r)[:400])

    # Finite weights, overflowing activations: the site is named.
    m = cli.copy_model("overflow_fc1")
    set_values(os.path.join(m, "model.safetensors"), "blocks.0.mlp.fc1.weight",
               lambda n: {i: 3e38 for i in range(n)})
    cli.expect("eval with overflowing fc1", ["eval", "--model", m, "--data", data, "-q"], "model",
               r"NaN/Inf", r"site blocks\.0\.mlp\.fc1", r"[01]\.png")
    cli.expect("quantize with overflowing fc1", ["quantize", "--model", m, "--calib", data, "--method", "minmax",
                                                "--bits", "8", "-q", "-o", cli.path("overflow_q")], "model",
               r"site blocks\.0\.mlp\.fc[12]", r"non-finite")
    cli.check(not os.path.exists(cli.path("overflow_q")), "overflow: quantize wrote no output")

    # A quantized model directory whose float tensors (LayerNorm, biases, steps) were damaged after
    # it was written: refused at load, naming the tensor, by every command that loads it.
    q = cli.path("qdir")
    cli.expect("quantize a clean model", ["quantize", "--model", cli.model, "--calib", data, "--method", "minmax",
                                          "--bits", "8", "-q", "-o", q], "ok")
    for k, (tensor, vals) in enumerate((("blocks.0.norm1.weight", lambda n: {1: nan}),
                                        ("blocks.2.mlp.fc1.bias", lambda n: {n - 1: inf}),
                                        ("pos_embed", lambda n: {0: -inf}))):
        d = cli.path(f"qdir_{k}")
        shutil.copytree(q, d)
        set_values(os.path.join(d, "model.safetensors"), tensor, vals)
        for cmd in (["eval", "--model", d, "--data", data, "-q"], ["eval", "--model", d, "--data", data, "-q",
                                                                   "--simulate"],
                    ["bench", "--model", d, "--iters", "1", "--warmup", "0"], ["info", "--model", d]):
            cli.expect(f"{' '.join(cmd[:1] + cmd[-1:])}: quantized dir with non-finite {tensor}", cmd, "model",
                       tensor.replace(".", r"\."), "non-finite", r"model\.safetensors")
    cli.finish()


if __name__ == "__main__":
    main()
