"""Issue class: vitq never destroys a user's files.

For quantize and export: an output directory that is (or contains) an input is refused
before any work (also through a symbolic link); a non-empty output directory is refused
without --force and replaced as a whole with it (never a mixed directory: --plan-only into an
old quantized directory leaves no stale model.safetensors); an output under a regular file or
in an unwritable place is refused before calibrating, with exit 5; a failure during the run
(here: a plan that does not match the model) leaves no partial or staging directory and
the old output intact; Ctrl-C (SIGINT) or SIGTERM during calibration leaves neither.
eval/bench --json never overwrite an input. The source files stay byte-identical throughout."""
import os
import signal
import subprocess
import time

from cli_common import Cli, parse_args, snapshot, read_json, write_json

IDX = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def listing(d):
    return sorted(os.listdir(d))


def main():
    args = parse_args()
    cli = Cli(args)
    model = cli.copy_model("m")
    calib = cli.image_folder("calib", per_class=3)
    q = ["quantize", "--model", model, "--calib", calib, "--method", "minmax", "--bits", "4", "--calib-size", "6", "-q"]
    before = {model: snapshot(model), calib: snapshot(calib)}

    def untouched(what):
        for p, snap in before.items():
            cli.check(snapshot(p) == snap, f"{what}: {os.path.basename(p)} byte-identical")

    def no_staging(what, parent):
        left = [n for n in os.listdir(parent) if ".vitq-staging-" in n or ".vitq-old-" in n or ".tmp." in n]
        cli.check(not left, f"{what}: no staging/temporary entries left in {parent}", str(left))

    # 1. outputs that are or contain an input: refused before any work, even with --force.
    link = cli.path("link-to-m")
    os.symlink(model, link)
    for what, out, extra in [("-o the model dir", model, []), ("-o the model dir --force", model, ["--force"]),
                             ("-o a symlink to the model dir", link, ["--force"]),
                             ("-o the parent of the model dir", cli.tmp, ["--force"]),
                             ("-o the calibration dir", calib, ["--force"])]:
        cli.expect(f"quantize {what}", q + ["-o", out] + extra, "usage", r"-o", r"input", os.path.basename(out) if out != cli.tmp else "contains")
    untouched("after refused quantize")
    cli.expect("export -o the model dir", ["export", "--model", model, "--plan", cli.path("nope.json"), "-o", model],
               "usage", r"is the input")
    untouched("after refused export")

    # 2. a fresh output, then the same output again: refused without --force.
    out = cli.path("q")
    cli.expect("quantize into a new directory", q + ["-o", out], "ok")
    cli.check(listing(out) == ["config.json", "model.safetensors", "plan.json", "report.json"],
              "new output holds the quantized model", str(listing(out)))
    first = snapshot(out)
    cli.expect("quantize into the existing directory", q + ["-o", out], "usage", r"not empty", r"--force")
    cli.expect("quantize --plan-only into the existing directory", q + ["--plan-only", "-o", out], "usage", r"--force")
    cli.check(snapshot(out) == first, "refused runs leave the old output byte-identical")
    cli.expect("export into the existing directory", ["export", "--model", model, "--plan", out + "/plan.json",
                                                      "-o", cli.path("e0")], "ok")
    cli.expect("export into an existing non-empty directory", ["export", "--model", model, "--plan",
                                                                out + "/plan.json", "-o", out], "usage", r"input")
    cli.expect("export into another non-empty directory", ["export", "--model", model, "--plan", out + "/plan.json",
                                                           "-o", cli.path("e0")], "usage", r"--force")

    # 3. --force replaces as a whole: --plan-only leaves no stale model.safetensors.
    with open(os.path.join(out, "notes.txt"), "w") as f:
        f.write("mine")
    cli.expect("quantize --plan-only --force over a quantized dir", q + ["--plan-only", "--force", "-o", out], "ok")
    cli.check(listing(out) == ["plan.json", "report.json"], "--force replaced the directory as a whole",
              str(listing(out)))
    os.makedirs(os.path.join(out, "sub"))
    cli.expect("--force into a directory holding a subdirectory", q + ["--force", "-o", out], "usage", r"'sub'")
    os.rmdir(os.path.join(out, "sub"))
    no_staging("after --force", cli.tmp)

    # 4. unwritable locations: refused before calibrating (exit 5), nothing created.
    with open(cli.path("afile"), "w") as f:
        f.write("x")
    for what, bad in [("-o under a regular file", cli.path("afile", "q")), ("-o a regular file", cli.path("afile")),
                      ("-o in an unwritable place", "/proc/vitq-cannot-write/q")]:
        rc, text, secs = cli.run(*(q + ["-o", bad]))
        cli.check(rc == 5 and "loading calibration" not in text and ("afile" in text or "/proc" in text),
                  f"quantize {what}: exit {rc} (want 5) before calibrating, naming the path", text)
    cli.expect("eval --json under a regular file", ["eval", "--model", model, "--data", calib, "-q", "--json",
                                                    cli.path("afile", "r.json")], "io", r"afile")

    # 5. a failure after the output was accepted: no partial directory, old output intact.
    plan = read_json(os.path.join(cli.path("e0"), "plan.json"))
    plan["architecture"] = "something_else"
    bad_sites = dict(plan)
    bad_sites["sites"] = {"blocks.99.attn.qkv": list(plan["sites"].values())[0]}
    write_json(cli.path("bad_plan.json"), bad_sites)
    e0 = snapshot(cli.path("e0"))
    rc, text, _ = cli.run("export", "--model", model, "--plan", cli.path("bad_plan.json"), "-o", cli.path("e1"))
    cli.check(rc == 3 and not os.path.exists(cli.path("e1")), f"failed export: exit {rc} (want 3), no e1", text)
    rc, text, _ = cli.run("export", "--model", model, "--plan", cli.path("bad_plan.json"), "-o", cli.path("e0"),
                          "--force")
    cli.check(rc == 3 and snapshot(cli.path("e0")) == e0, f"failed export --force: exit {rc}, old e0 intact", text)
    no_staging("after failed runs", cli.tmp)

    # 6. SIGINT / SIGTERM during calibration: no output, no staging directory.
    for sig in (signal.SIGINT, signal.SIGTERM):
        target = cli.path(f"killed_{sig}")
        p = subprocess.Popen([cli.vitq, "quantize", "--model", model, "--calib", IDX, "--method", "easyquant",
                              "--bits", "4", "--calib-size", "64", "-o", target, "-q"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        staged = False
        for _ in range(200):  # wait until the staging directory exists
            time.sleep(0.05)
            if any(".vitq-staging-" in n for n in os.listdir(cli.tmp)):
                staged = True
                break
        time.sleep(0.5)
        p.send_signal(sig)
        p.wait(timeout=60)
        cli.check(staged and p.returncode == -sig, f"signal {sig}: killed by it (rc {p.returncode}), staging seen")
        cli.check(not os.path.exists(target), f"signal {sig}: no output directory")
        no_staging(f"signal {sig}", cli.tmp)

    # 7. --json never overwrites an input file.
    for what, path in [("the model's weights", os.path.join(model, "model.safetensors")),
                       ("the model's config", os.path.join(model, "config.json")),
                       ("an image of the data", os.path.join(calib, "0", "0.png"))]:
        cli.expect(f"eval --json onto {what}", ["eval", "--model", model, "--data", calib, "-q", "--json", path],
                   "usage", r"--json", r"input")
    cli.expect("eval --json onto the plan", ["eval", "--model", model, "--data", calib, "-q", "--plan",
                                             out + "/plan.json", "--json", out + "/plan.json"], "usage", r"is the input")
    cli.expect("bench --json onto the weights", ["bench", "--model", model, "--iters", "1", "--json",
                                                 os.path.join(model, "model.safetensors")], "usage", r"input")
    untouched("at the end")
    cli.finish()


if __name__ == "__main__":
    main()
