"""Issue classes: numbers validated in the type they are used in; user errors never reported as
internal errors; misleading configuration fields named at load time.

- Plan fields (class 3): steps that are positive as a double but 0 or subnormal as float32,
  values beyond float32, bit-widths that a narrowing conversion would wrap (4294967304 -> 8):
  exit 3 naming plan.json and the field, for `eval --plan` and `export`.
- JSON type errors and wrong file kinds (class 5): any field of the wrong type in plan.json,
  config.json or preprocessor_config.json is exit 3 naming the file and field; a directory given
  where a JSON file is expected is exit 5.
- Options (classes 3, 5): every floating-point option of every command refuses NaN/Inf
  (exit 2 naming the option); counts out of range (2147483647 threads, -1 images) likewise.
- Configuration (class 6): a zero/huge std or mean is refused at load naming the field.
- Method options: one that the chosen method does not read is named in a warning."""
import copy
import os
import re
import subprocess

from cli_common import Cli, parse_args, read_json, write_json

SITE = "blocks.0.attn.qkv"


def options_of(cli, command):
    """{option: CLI11 type name} of the numeric options listed by `vitq COMMAND --help`."""
    out = subprocess.run([cli.vitq, command, "--help"], capture_output=True, text=True).stdout
    return {m.group(1): m.group(2) for m in re.finditer(r"^\s+(?:-\w,)?(--[\w-]+) (FLOAT|INT|UINT)\b", out, re.M)}


def main():
    args = parse_args()
    cli = Cli(args)
    data = cli.image_folder("data", per_class=2)
    m = cli.model

    # A valid plan to mutate.
    pdir = cli.path("plan")
    cli.expect("make a plan", ["quantize", "--model", m, "--calib", data, "--method", "minmax", "--bits", "8",
                               "--plan-only", "-q", "-o", pdir], "ok")
    plan = read_json(os.path.join(pdir, "plan.json"))

    def plan_case(what, mutate, code, *patterns):
        p = copy.deepcopy(plan)
        mutate(p)
        path = cli.path(f"bad_{len(os.listdir(cli.tmp))}.json")
        write_json(path, p)
        for cmd in (["eval", "--model", m, "--data", data, "--plan", path, "-q"],
                    ["export", "--model", m, "--plan", path, "-o", cli.path("never")]):
            cli.expect(f"{cmd[0]}: plan {what}", cmd, code, re.escape(os.path.basename(path)), *patterns)
        cli.check(not os.path.exists(cli.path("never")), f"plan {what}: export wrote nothing")

    def site(p):
        return p["sites"][SITE]

    # Class 3: values checked as float32 / before narrowing.
    for v in (1e-50, 1e-40, 1e39, 0, -0.5):
        plan_case(f"x.scale {v}", lambda p, v=v: site(p)["x"].__setitem__("scale", v), "model",
                  re.escape(f"{SITE}.x.scale"))
    plan_case("w.scale 1e-45", lambda p: site(p)["w"].__setitem__("scale", 1e-45), "model", r"w\.scale")
    for b in (4294967304, 18446744073709551615, -1, 1, 11, 8.0):
        plan_case(f"bits {b}", lambda p, b=b: site(p)["x"].__setitem__("bits", b), "model", r"x\.bits")
    plan_case("bias_correction 1e39", lambda p: site(p).__setitem__("bias_correction", [1e39] * 192), "model",
              r"bias_correction\[0\]", "float32")
    plan_case("weight_offset -1e39", lambda p: site(p).__setitem__("weight_offset", [-1e39] * 192), "model",
              r"weight_offset\[0\]")
    plan_case("ln_smoothing subnormal", lambda p: p.__setitem__("ln_smoothing", {SITE: [1e-40] * 64}), "model",
              r"ln_smoothing", SITE)
    plan_case("channel_scales 1e-50",
              lambda p: site(p)["w"].__setitem__("channel_scales", [1e-50] * 192), "model", r"channel_scales\[0\]")

    # Class 5: JSON type errors in the plan.
    for field, mutate in (("format", lambda p: p.__setitem__("format", None)),
                          ("format", lambda p: p.__setitem__("format", 5)),
                          ("format_version", lambda p: p.__setitem__("format_version", "1")),
                          ("tool_version", lambda p: p.__setitem__("tool_version", 5)),
                          ("sites", lambda p: p.__setitem__("sites", [])),
                          (r"x", lambda p: site(p).__setitem__("x", 5)),
                          (r"x\.bits", lambda p: site(p)["x"].__setitem__("bits", "8")),
                          (r"x\.unsigned", lambda p: site(p)["x"].__setitem__("unsigned", "yes")),
                          (r"w\.scale", lambda p: site(p)["w"].__setitem__("scale", [0.1])),
                          (r"weight_codes", lambda p: site(p).__setitem__("weight_codes", "yes"))):
        plan_case(f"type error in {field}", mutate, "model", field)

    # Class 5: directories and missing files where JSON files are expected.
    os.makedirs(cli.path("plan_dir"), exist_ok=True)
    cli.expect("--plan is a directory", ["eval", "--model", m, "--data", data, "--plan", cli.path("plan_dir")], "io",
               "plan_dir", "directory")
    cli.expect("--plan is missing", ["eval", "--model", m, "--data", data, "--plan", cli.path("nope.json")], "io",
               r"nope\.json")
    dm = cli.copy_model("config_dir")
    os.remove(os.path.join(dm, "config.json"))
    os.makedirs(os.path.join(dm, "config.json"))
    for cmd in (["eval", "--model", dm, "--data", data, "-q"], ["info", "--model", dm],
                ["quantize", "--model", dm, "--calib", data, "--bits", "8", "-o", cli.path("never")]):
        cli.expect(f"{cmd[0]}: config.json is a directory", cmd, "io", r"config\.json", "directory")

    # Class 5/6: config.json fields (timm layout), exit 3 naming the field, before any image is read.
    cfg = read_json(os.path.join(m, "config.json"))

    def config_case(what, mutate, *patterns, code="model"):
        d = cli.copy_model(f"cfg_{len(os.listdir(cli.tmp))}")
        c = copy.deepcopy(cfg)
        mutate(c)
        write_json(os.path.join(d, "config.json"), c)
        for cmd in (["eval", "--model", d, "--data", data, "-q"], ["info", "--model", d]):
            cli.expect(f"{cmd[0]}: config {what}", cmd, code, r"config\.json", *patterns)

    pc = lambda c: c["pretrained_cfg"]
    for v in ([0], [1e-9], [1e308], ["a"], [-1]):
        config_case(f"std {v}", lambda c, v=v: pc(c).__setitem__("std", v), r"pretrained_cfg\.std")
    for v in ([1e308], [-1e5], "0.5"):
        config_case(f"mean {v}", lambda c, v=v: pc(c).__setitem__("mean", v), r"pretrained_cfg\.mean")
    config_case("input_size wraps", lambda c: pc(c).__setitem__("input_size", [1, 4294967324, 28]), "input_size")
    config_case("img_size wraps", lambda c: c["model_args"].__setitem__("img_size", [4294967324, 4294967324]),
                "img_size")
    config_case("embed_dim 64.5", lambda c: c["model_args"].__setitem__("embed_dim", 64.5), "embed_dim")
    config_case("num_classes string", lambda c: c.__setitem__("num_classes", "10"), "num_classes")
    config_case("model_args string", lambda c: c.__setitem__("model_args", "x"), "model_args")
    config_case("architecture number", lambda c: c.__setitem__("architecture", 5), "architecture")
    config_case("timm name with patch 0", lambda c: (c.pop("model_args"), c.__setitem__("architecture",
                                                                                          "vit_tiny_patch0_224")),
                "patch size")

    # Hugging Face layout: preprocessor_config.json fields.
    hf = {"model_type": "vit", "hidden_size": 64, "num_hidden_layers": 6, "num_attention_heads": 4,
          "intermediate_size": 128, "image_size": 28, "patch_size": 4, "num_channels": 1, "num_labels": 10}
    for what, pre, pat in (("image_std strings", {"image_std": ["a", "b", "c"]}, "image_std"),
                           ("image_std zero", {"image_std": [0]}, "image_std"),
                           ("image_std string", {"image_std": "0.5"}, "image_std"),
                           ("image_mean huge", {"image_mean": [1e308, 0, 0]}, "image_mean"),
                           ("resample string", {"resample": "bilinear"}, "resample")):
        d = cli.copy_model(f"hf_{len(os.listdir(cli.tmp))}")
        write_json(os.path.join(d, "config.json"), hf)
        write_json(os.path.join(d, "preprocessor_config.json"), pre)
        cli.expect(f"info: HF {what}", ["info", "--model", d], "model", r"preprocessor_config\.json", pat)
    d = cli.copy_model("hf_pre_dir")
    write_json(os.path.join(d, "config.json"), hf)
    os.makedirs(os.path.join(d, "preprocessor_config.json"))
    cli.expect("info: HF preprocessor_config.json is a directory", ["info", "--model", d], "io",
               r"preprocessor_config\.json", "directory")

    # Options: every FLOAT option of every command refuses NaN and infinities; counts are ranged.
    base = {"quantize": ["quantize", "--model", m, "--calib", data, "--bits", "8", "-o", cli.path("never")],
            "eval": ["eval", "--model", m, "--data", data, "-q"],
            "bench": ["bench", "--model", m, "--iters", "1", "--warmup", "0"]}
    for command, cmd in base.items():
        opts = options_of(cli, command)
        cli.check(len(opts) >= (20 if command == "quantize" else 2), f"{command}: numeric options found in --help",
                  str(opts))
        for o, t in opts.items():
            if t == "FLOAT":
                bad = ["nan", "inf", "-inf", "1e400"]
            elif o in ("--seed", "--limit", "--rotation-seed"):  # any 64-bit unsigned integer is a seed; a limit up to 2^40
                bad = ["99999999999999999999", "1.5", "-1"]
            else:
                bad = ["2147483648", "99999999999999999999", "1.5", "-1" if t == "UINT" else "2147483647"]
            for v in bad:
                cli.expect(f"{command} {o} {v}", cmd + [o, v], "usage", re.escape(o))
    for o in ("--threads", "--batch", "--random-calibration"):
        cli.expect(f"quantize {o} 2147483647", base["quantize"][:-2] + [o, "2147483647", "-o", cli.path("never")],
                   "usage", re.escape(o))
    cli.expect("quantize --calib-size -1", base["quantize"] + ["--calib-size", "-1"], "usage", "--calib-size")
    for v in ("0", "101", "nan"):
        cli.expect(f"quantize --percentile {v}", base["quantize"] + ["--method", "percentile", "--percentile", v],
                   "usage", "--percentile")
    cli.check(not os.path.exists(cli.path("never")), "no option error left an output directory")

    # An option of another method is named in a warning (the run goes on); one the method (or
    # the activation method bitsplit uses) reads is not.
    out = cli.expect("minmax with --lapq-p and --gamma", ["quantize", "--model", m, "--calib", data, "--method", "minmax",
                     "--bits", "8", "--plan-only", "-q", "--lapq-p", "2", "--gamma", "3", "-o", cli.path("warn1")], "ok",
                     r"warning: --lapq-p is an option of --method lapq; it has no effect with --method minmax",
                     r"warning: --gamma is an option of --method liu2021")
    out = cli.expect("bitsplit with its activation method's --percentile", ["quantize", "--model", m, "--calib", data,
                     "--method", "bitsplit", "--bits", "8", "--plan-only", "-q", "--percentile", "99.9",
                     "-o", cli.path("warn2")], "ok")
    cli.check("warning: --percentile" not in out, "no warning for an option the activation method reads", out)
    cli.finish()


if __name__ == "__main__":
    main()
