#!/usr/bin/python3
"""Sharded evaluation: `vitq eval --shard K/N --json part.json` on each shard, then
`vitq eval --merge part*.json`, gives exactly the unsharded run's top-1/top-5 counts and the same
per-image predictions in the same order (the reference is the unsharded run of the same binary);
the mean KL to a --reference agrees to rounding. Merging refuses a missing, repeated or foreign
shard, and --shard refuses malformed values, each with exit 2 and a message naming the problem.

On the bundled model with Debian's Fashion-MNIST (skips without it): the FP32 model, a simulated
W4A4 plan with --reference, and its integer model, on a 600-image --limit subset, in 4 shards
(given to --merge out of order) and in 7 shards of 5 images (some shards empty). With ../shared
present also the shared CIFAR ViT's integer W8A8 model on its whole dev split (5000 images)."""
import os

from cli_common import FMNIST, Cli, parse_args, read_json, require_fashion_mnist, write_json

def sharded(cli, tag, n, base_args, order=None):
    """Runs n shards of `vitq eval base_args` and merges them; returns (merged json, stdout)."""
    parts = []
    for k in range(1, n + 1):
        p = cli.path(f"{tag}_part{k}.json")
        cli.expect(f"{tag}: shard {k}/{n}", ["eval", *base_args, "--shard", f"{k}/{n}", "--json", p, "-q"], "ok",
                   rf"shard\s+{k}/{n}")
        parts.append(p)
    merged = cli.path(f"{tag}_merged.json")
    given = [parts[i] for i in (order or range(n))]
    out = cli.expect(f"{tag}: merge of {n} shards", ["eval", "--merge", *given, "--json", merged], "ok",
                     rf"merged\s+{n} shards", r"top-1")
    return (read_json(merged) if os.path.exists(merged) else {}), out, parts


def compare(cli, tag, whole, merged):
    same = all(whole.get(k) == merged.get(k) for k in
               ("images", "top1_correct", "top5_correct", "evaluated", "predictions", "top1", "top5", "skipped"))
    cli.check(same and whole.get("images", 0) > 0,
              f"{tag}: merged = unsharded (top-1 {merged.get('top1_correct')}/{merged.get('images')}, "
              f"top-5 {merged.get('top5_correct')}, {len(merged.get('predictions', []))} predictions in order)",
              f"unsharded top-1 {whole.get('top1_correct')} top-5 {whole.get('top5_correct')} images "
              f"{whole.get('images')}; predictions equal: {whole.get('predictions') == merged.get('predictions')}")
    if "reference" in whole:
        a, b = whole["reference"], merged.get("reference", {})
        ok = a["agreement_count"] == b.get("agreement_count") and abs(a["kl_mean"] - b.get("kl_mean", 1e9)) <= \
            1e-9 * max(1.0, abs(a["kl_mean"]))
        cli.check(ok and a["kl_mean"] > 0, f"{tag}: reference agreement {b.get('agreement_count')} and mean KL "
                  f"{b.get('kl_mean')} = unsharded {a['agreement_count']}, {a['kl_mean']} (to rounding)")


def main():
    cli = Cli(parse_args())
    require_fashion_mnist()
    data = os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz")
    calib = os.path.join(FMNIST, "train-images-idx3-ubyte.gz")
    qdir = cli.path("w4")
    cli.expect("quantize a W4A4 model", ["quantize", "--model", cli.model, "--calib", calib, "--calib-size", "32",
                                         "--method", "minmax", "--bits", "4", "-o", qdir, "-q"], "ok")
    subset = ["--data", data, "--limit", "600", "--seed", "5", "--batch", "16"]
    runs = [("fp32", ["--model", cli.model, *subset]),
            ("simulated W4A4 + reference", ["--model", cli.model, "--plan", os.path.join(qdir, "plan.json"),
                                            "--reference", cli.model, *subset]),
            ("integer W4A4", ["--model", qdir, *subset])]
    for tag, args in runs:
        whole_path = cli.path(f"{tag}_whole.json".replace(" ", "_"))
        cli.expect(f"{tag}: unsharded", ["eval", *args, "--json", whole_path, "-q"], "ok")
        whole = read_json(whole_path)
        merged, _, parts = sharded(cli, tag.replace(" ", "_"), 4, args, order=[2, 0, 3, 1])
        compare(cli, f"{tag}, 4 shards", whole, merged)
    # The shards of the last run: a slice each, in order, covering the selection once.
    slices = [read_json(p)["evaluated"] for p in parts]
    cli.check([len(s) for s in slices] == [150] * 4 and sum(slices, []) == whole["evaluated"],
              f"integer W4A4: the 4 shards are contiguous slices of 150 images ({[len(s) for s in slices]})")

    # More shards than some slices have images: 35 images in 7 shards of 5, and 12 shards (some empty).
    small = ["--model", cli.model, "--data", data, "--limit", "35"]
    cli.expect("35 images: unsharded", ["eval", *small, "--json", cli.path("small_whole.json"), "-q"], "ok")
    whole = read_json(cli.path("small_whole.json"))
    for n in (7, 40):
        merged, _, _ = sharded(cli, f"small{n}", n, small)
        compare(cli, f"35 images in {n} shards", whole, merged)

    # Merging refuses what is not the shards of one run.
    p4 = [cli.path(f"fp32_part{k}.json") for k in range(1, 5)]
    cli.expect("merge: a missing shard", ["eval", "--merge", p4[0], p4[1], p4[3]], "usage", r"shard 3/4 is missing")
    cli.expect("merge: a repeated shard", ["eval", "--merge", p4[0], p4[1], p4[2], p4[3], p4[1]], "usage",
               r"shard 2/4 is also given as")
    foreign = cli.path("simulated_W4A4_+_reference_part3.json")
    cli.expect("merge: a shard of another run", ["eval", "--merge", p4[0], p4[1], foreign, p4[3]], "usage",
               r"field '(plan|engine)'", r"shards of different runs")
    cli.expect("merge: shards of a 7-way split with a 4-way one", ["eval", "--merge", p4[0],
               cli.path("small7_part2.json")], "usage", r"shard 2 of 7, but .* is a shard of 4")
    cli.expect("merge: an unsharded result", ["eval", "--merge", p4[0], cli.path("small_whole.json")], "usage",
               r"small_whole\.json: not a shard result")
    bad = cli.path("bad.json")
    with open(bad, "w") as f:
        f.write('{"shard": {"index": 1, "count": 1}, "model": ')
    cli.expect("merge: a truncated result", ["eval", "--merge", bad], "model", r"bad\.json")
    j = read_json(p4[0])
    j["predictions"] = j["predictions"][:-1]
    write_json(bad, j)
    cli.expect("merge: predictions shorter than images", ["eval", "--merge", bad, p4[1], p4[2], p4[3]], "model",
               r"bad\.json: fields 'evaluated' and 'predictions'")
    cli.expect("merge: no --model with it", ["eval", "--merge", p4[0], "--model", cli.model], "usage", r"excludes")
    for value in ("0/4", "5/4", "4", "a/b", "1/0", "-1/4", "1/4/2", ""):
        cli.expect(f"--shard '{value}' is refused", ["eval", "--model", cli.model, "--data", data, "--shard", value],
                   "usage", r"--shard")
    cli.expect("eval without --model or --merge", ["eval", "--data", data], "usage", r"--model is required")

    shared = os.path.join(cli.source, "..", "shared")
    cifar_model = os.path.join(shared, "models", "vit_cifar10_patch4_32")
    cifar_data = os.path.join(shared, "data", "cifar10")
    if os.path.isdir(cifar_model) and os.path.isdir(cifar_data):
        cdir = cli.path("cifar_w8")
        cli.expect("CIFAR: quantize W8A8", ["quantize", "--model", cifar_model, "--calib",
                                            os.path.join(cifar_data, "calib"), "--method", "minmax", "--bits", "8",
                                            "-o", cdir, "-q"], "ok")
        args = ["--model", cdir, "--data", os.path.join(cifar_data, "dev")]
        cli.expect("CIFAR: unsharded", ["eval", *args, "--json", cli.path("cifar_whole.json"), "-q"], "ok")
        whole = read_json(cli.path("cifar_whole.json"))
        merged, _, _ = sharded(cli, "cifar", 4, args, order=[3, 1, 0, 2])
        compare(cli, "CIFAR dev, integer W8A8, 4 shards", whole, merged)
        cli.check(whole.get("images") == 5000, f"CIFAR: the whole dev split ({whole.get('images')} images)")
    else:
        print(f"skip (part): {cifar_model} or {cifar_data} absent; the CIFAR dev check needs ../shared")
    cli.finish()


if __name__ == "__main__":
    main()
