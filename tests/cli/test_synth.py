#!/usr/bin/python3
"""`vitq synth`: calibration images generated from the model (FDDA-style LayerNorm statistics
alignment to class centres, DeepInversion-style pixel optimisation).

Checks, on the bundled model with Debian's Fashion-MNIST (skips without it):
- the output is an ImageFolder tree (OUT/<class>/synth_NNNNN.png, class_map.txt, report.json) that
  `vitq quantize --calib` and `vitq eval --data` read, the model giving most images their class;
- determinism: the same seed gives byte-identical PNGs, another seed other pixels;
- the alignment works, measured independently in PyTorch (tests/parity/ref_vit.py's forward on
  the PNGs as PIL reads them): the LayerNorm-input statistics of images generated with the
  statistics loss are nearer their class centres (computed in torch from the centre images) than
  those of images generated with the same seed and --stats 0, by at least half;
- data-free synthesis (no --centres-from) runs and spreads its images over the classes;
- refusals: missing centres, a non-empty output, bad counts."""
import gzip
import os
import sys

import numpy as np

from cli_common import FMNIST, Cli, parse_args, read_json, require_fashion_mnist, snapshot, write_png


def centre_folder(cli, per_class=2):
    """per_class test images of each class as grey PNGs in folders 0..9 (sorted names = labels)."""
    with gzip.open(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz")) as f:
        imgs = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(os.path.join(FMNIST, "t10k-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    root = cli.path("centres")
    for c in range(10):
        os.makedirs(os.path.join(root, str(c)))
        for k, i in enumerate(np.flatnonzero(labels == c)[:per_class]):
            write_png(os.path.join(root, str(c), f"{k}.png"), 28, 28, imgs[i].tobytes())
    return root


def pngs(root):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".png"))


def layer_stats(model_dir, files):
    """Per image, per block LayerNorm input: (mean, sd over tokens), PIL → the model's preprocessing."""
    import json
    import torch
    from PIL import Image
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "parity"))
    import ref_vit
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    dims = ref_vit.timm_dims(cfg)
    sd = {k: torch.from_numpy(np.array(v)) for k, v in ref_vit.read_safetensors(os.path.join(model_dir, "model.safetensors")).items()}
    pc = cfg["pretrained_cfg"]
    x = np.stack([(np.asarray(Image.open(f).convert("L"), np.float32) / 255.0 - pc["mean"][0]) / pc["std"][0]
                  for f in files])[:, None]
    taps = []
    with torch.no_grad():
        logits = ref_vit.vit_forward(sd, dims["num_heads"], taps=taps)(torch.tensor(x))
    mean = torch.stack([t.mean(1) for t in taps], 1).numpy()  # images × layers × D
    sdv = torch.stack([torch.sqrt(t.var(1, unbiased=False) + 1e-6) for t in taps], 1).numpy()
    return mean, sdv, logits.argmax(1).numpy()


def main():
    args = parse_args()
    require_fashion_mnist()
    cli = Cli(args)
    m = cli.model
    centres = centre_folder(cli)
    before = snapshot(centres)
    common = ["synth", "--model", m, "--centres-from", centres, "--centres-per-class", "2", "--images", "20",
              "--iters", "100", "--batch", "8", "--shift", "0", "--no-flip", "-q"]  # a 28-px model: no jitter
    a, b, c, d = (cli.path(n) for n in ("a", "b", "c", "d"))
    cli.expect("synth with class centres", [*common, "-o", a, "--seed", "3"], "ok", r"wrote 20 images")
    files = pngs(a)
    cli.check(len(files) == 20 and os.path.isfile(os.path.join(a, "class_map.txt")) and
              os.path.isfile(os.path.join(a, "report.json")), f"20 PNGs, class_map.txt and report.json ({len(files)})")
    rep = read_json(os.path.join(a, "report.json"))
    cli.check(rep["centres"]["classes"] == 10 and rep["centres"]["images"] == 20,
              f"report: 10 centres from 20 images ({rep['centres']})")
    cli.check(snapshot(centres) == before, "the centre images are untouched")

    # Determinism.
    cli.expect("synth again, same seed", [*common, "-o", b, "--seed", "3"], "ok")
    same = [open(f, "rb").read() == open(g, "rb").read() for f, g in zip(files, pngs(b))]
    cli.check(len(pngs(b)) == 20 and all(same), f"same seed: identical PNG bytes ({sum(same)}/20)")
    cli.expect("synth, another seed", [*common, "-o", c, "--seed", "4"], "ok")
    diff = [open(f, "rb").read() != open(g, "rb").read() for f, g in zip(files, pngs(c))]
    cli.check(sum(diff) >= 15, f"another seed: other pixels ({sum(diff)}/20 differ)")

    # The alignment, measured in torch: distance of each image's statistics to its class centre.
    cli.expect("synth without the statistics loss", [*common, "-o", d, "--seed", "3", "--stats", "0"], "ok")
    cm, cs, _ = layer_stats(m, pngs(centres))
    ccls = np.array([int(os.path.basename(os.path.dirname(f))) for f in pngs(centres)])
    cen_m = np.stack([cm[ccls == k].mean(0) for k in range(10)])  # 10 × layers × D
    cen_s = np.stack([cs[ccls == k].mean(0) for k in range(10)])
    scale = (np.stack([cs[i] for i in range(len(cs))]).mean(0) ** 2).mean(1)  # layers: mean sd² (global)

    def distance(root):
        fs = pngs(root)
        sm, ss, pred = layer_stats(m, fs)
        cls = np.array([int(os.path.basename(os.path.dirname(f))) for f in fs])
        dist = (((sm - cen_m[cls]) ** 2 + (ss - cen_s[cls]) ** 2).sum(2) / (sm.shape[2] * scale)).mean(1)
        return dist.mean(), (pred == cls).mean()

    da, hit_a = distance(a)
    dd, hit_d = distance(d)
    cli.check(da < 0.5 * dd, f"statistics nearer the class centres with the loss: {da:.4f} vs {dd:.4f} without")
    cli.check(hit_a >= 0.9, f"the model (torch) gives {100 * hit_a:.0f} % of the images their folder's class")

    # The tree is a calibration set and a labelled dataset.
    q = cli.path("q")
    cli.expect("quantize on the synthetic images", ["quantize", "--model", m, "--calib", a, "--method", "minmax",
                                                     "--bits", "8", "-o", q, "-q"], "ok")
    ej = cli.path("e.json")
    cli.expect("eval on the synthetic images", ["eval", "--model", m, "--data", a, "--json", ej, "-q"], "ok")
    if os.path.exists(ej):
        cli.check(read_json(ej)["top1"] >= 90, f"vitq eval: top-1 on the synthetic set {read_json(ej)['top1']:.1f} %")

    # Data-free.
    f = cli.path("free")
    cli.expect("data-free synth", ["synth", "--model", m, "-o", f, "--images", "10", "--iters", "30", "-q"], "ok",
               r"wrote 10 images")
    classes = sorted(os.path.basename(os.path.dirname(p)) for p in pngs(f))
    cli.check(len(set(classes)) == 10, f"data-free: the 10 images spread over the 10 classes ({classes})")

    # Refusals.
    cli.expect("missing centres", ["synth", "--model", m, "--centres-from", cli.path("nope"), "-o", cli.path("x1")],
               "data", "nope")
    cli.expect("non-empty output", [*common, "-o", a], "usage", "not empty|--force")
    cli.expect("--centres-per-class without centres", ["synth", "--model", m, "-o", cli.path("x3"),
                                                          "--centres-per-class", "2"], "usage", "--centres-from")
    cli.expect("--images 0", ["synth", "--model", m, "-o", cli.path("x2"), "--images", "0"], "usage", "--images")
    cli.check(not any(os.path.exists(cli.path(x)) for x in ("x1", "x2", "x3")), "nothing written on refusal")
    cli.finish()


if __name__ == "__main__":
    main()
