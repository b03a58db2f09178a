#!/usr/bin/python3
"""Deterministic bytes: `vitq quantize` run twice with the same inputs and seed writes
byte-identical files (plan.json, model.safetensors, config.json, the codes and compensation
files; report.json differs only in its timings and is left out) for every registered method
(read from `vitq quantize --help`), and for the options that add sampling or training: mixed
precision, block reconstruction with QDrop, grid and activation-step training, a calibration subset.

On the bundled model with Debian's Fashion-MNIST (skips without it): 16 calibration images."""
import os
import re

from cli_common import FMNIST, Cli, parse_args, require_fashion_mnist, snapshot

def registered_methods(cli):
    rc, out, _ = cli.run("quantize", "--help")
    m = re.search(r"PTQ method: ([a-z0-9_, ]+)", out)
    return [s.strip() for s in m.group(1).split(",")] if rc == 0 and m else []


def main():
    cli = Cli(parse_args())
    require_fashion_mnist()
    calib = os.path.join(FMNIST, "train-images-idx3-ubyte.gz")
    methods = registered_methods(cli)
    cli.check(len(methods) >= 8 and "vitq" in methods and "liu2021" in methods,
              f"the method list is read from --help: {methods}")
    fast = {"lapq": ["--lapq-evals", "40"], "bitsplit": ["--bitsplit-epochs", "3"]}
    runs = [(m, ["--method", m, "--bits", "6"] + fast.get(m, [])) for m in methods]
    runs += [("vitq W4 reconstruct + QDrop + grid + activation steps",
              ["--method", "vitq", "--bits", "4", "--compensate", "reconstruct", "--recon-iters", "20",
               "--recon-drop", "0.3", "--recon-step-lr", "0.001", "--recon-act-lr", "0.001"]),
             ("liu2021 mixed precision", ["--method", "liu2021", "--mixed-precision", "6", "--mp-svd-images", "4"])]
    for i, (what, args) in enumerate(runs):
        snaps = []
        for k in range(2):
            out = cli.path(f"run{i}_{k}")
            cli.expect(f"{what}: quantize #{k + 1}", ["quantize", "--model", cli.model, "--calib", calib,
                                                      "--calib-size", "16", "--seed", "3", "-o", out, "-q", *args], "ok")
            s = snapshot(out) if os.path.isdir(out) else {}
            s.pop("report.json", None)
            snaps.append(s)
        files = sorted(snaps[0])
        cli.check(bool(files) and "plan.json" in files and "model.safetensors" in files and snaps[0] == snaps[1],
                  f"{what}: the two runs wrote the same bytes ({', '.join(files)})",
                  "differs: " + ", ".join(f for f in set(snaps[0]) | set(snaps[1]) if snaps[0].get(f) != snaps[1].get(f)))
    cli.finish()


if __name__ == "__main__":
    main()
