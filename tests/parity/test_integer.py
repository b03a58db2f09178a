"""The integer runtime against the simulator, end to end: `vitq quantize -o DIR` writes a
quantized model directory, `vitq eval --model DIR` runs it in integers and `--simulate` runs the
same plan quantize-dequantize; their top-1 predictions must agree (>= 399/400 on
imagenet-sample/dev, >= 4990/5000 on cifar10/dev, accuracy within one image) for W8A8, W6A6,
W4A4 and a mixed-precision plan with 9/10-bit blocks. The quantized weights are decoded here
independently (numpy, docs/FORMAT.md) and compared with round(W / step) of the FP32 checkpoint.
A random-weight model covers all of it when ../shared is absent; the shared models add the
acceptance counts and the file-size ratios."""
import json
import os
import struct

import numpy as np

import common
import ref_vit


# --------------------------------------------------------------------------- format decoding

def read_safetensors_raw(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        dt = {"F32": "<f4", "I8": "i1", "I16": "<i2", "U8": "u1"}[info["dtype"]]
        out[name] = (info["dtype"], np.frombuffer(data[b:e], dtype=dt).reshape(info["shape"]))
    return meta, out


def unpack_stream(buf, bits_per_row, k):
    """FORMAT.md: a little-endian bit stream, value i of a run at stream bits [s + i*b, s + (i+1)*b)."""
    stream = np.unpackbits(buf, bitorder="little")
    rows, pos = [], 0
    for b in bits_per_row:
        chunk = stream[pos:pos + b * k].reshape(k, b).astype(np.int64)
        v = (chunk << np.arange(b)).sum(1)
        v = np.where(v >= 1 << (b - 1), v - (1 << b), v)
        rows.append(v)
        pos += b * k
    assert not stream[pos:].any(), "padding bits must be zero"
    return np.stack(rows)


def check_codes(chk, src_dir, qdir, label):
    """Every quantized linear site: the stored codes are clip(rint(W / step)) of the checkpoint."""
    meta, t = read_safetensors_raw(os.path.join(qdir, "model.safetensors"))
    plan = json.load(open(os.path.join(qdir, "plan.json")))
    sd = {k: v.numpy() for k, v in ref_vit.read_safetensors(os.path.join(src_dir, "model.safetensors")).items()}
    ok, sites = True, 0
    for name, s in plan["sites"].items():
        if name + ".qweight" not in t:
            continue
        sites += 1
        w = sd[(name + ".proj" if name == "patch_embed" else name) + ".weight"]
        w = w.reshape(w.shape[0], -1).astype(np.float32)
        n, k = w.shape
        bits = s["w"].get("channel_bits", [s["w"]["bits"]] * n)
        steps = np.asarray(s["w"].get("channel_scales", [s["w"]["scale"]] * n), dtype=np.float32)
        dtype, q = t[name + ".qweight"]
        if dtype == "U8":
            q = unpack_stream(q, bits, k)
        lo = np.asarray([-(1 << (b - 1)) for b in bits])[:, None]
        hi = np.asarray([(1 << (b - 1)) - 1 for b in bits])[:, None]
        want = np.clip(np.rint(w / steps[:, None]), lo, hi)  # float32 true division, round half even
        got_steps = t[name + ".weight_scale"][1]
        ok &= bool((q.astype(np.int64) == want).all()) and bool((got_steps == steps[: got_steps.size]).all())
    chk.check(ok and meta.get("format") == "vitq-quantized" and sites > 0,
              f"{label}: {sites} sites' codes decoded independently equal clip(rint(W/step))")


# --------------------------------------------------------------------------- runs

def quantize(args, tmp, name, model, calib, extra, class_map=None):
    out = os.path.join(tmp, name)
    cmd = [args.vitq, "quantize", "--model", model, "-o", out, "-q"] + extra
    cmd += ["--calib", calib] if calib else []
    cmd += ["--class-map", class_map] if class_map else []
    common.run(cmd)
    return out


def evaluate(args, qdir, data, class_map, simulate):
    out = os.path.join(qdir, "sim.json" if simulate else "int.json")
    cmd = [args.vitq, "eval", "--model", qdir, "--data", data, "-q", "--batch", 16, "--json", out]
    cmd += ["--class-map", class_map] if class_map else []
    cmd += ["--simulate"] if simulate else []
    common.run(cmd)
    return json.load(open(out))


def compare_runs(chk, args, qdir, data, class_map, label, min_agree):
    i, s = evaluate(args, qdir, data, class_map, False), evaluate(args, qdir, data, class_map, True)
    assert i["evaluated"] == s["evaluated"]
    n = len(i["predictions"])
    same = sum(a == b for a, b in zip(i["predictions"], s["predictions"]))
    classes = len(set(i["predictions"]))
    chk.check(same >= min_agree(n) and abs(i["top1_correct"] - s["top1_correct"]) <= 1,
              f"{label}: identical top-1 on {same}/{n} images ({classes} classes predicted); top-1 integer {i['top1']:.2f}% "
              f"({i['top1_correct']}) vs simulated {s['top1']:.2f}% ({s['top1_correct']})")
    return i, s


def hand_mixed_precision(args, tmp, name, src, base_q, block_bits):
    """A mixed-precision plan from a MinMax plan by hand: block i's MSA sites (qkv, matmul_qk,
    matmul_av, proj) get block_bits[i][0] bits and its MLP sites block_bits[i][1]; each step is
    rescaled to the new grid (Δ·qmax(b)/qmax(b'), the MinMax step of b' bits up to rounding)."""
    plan = json.load(open(os.path.join(base_q, "plan.json")))
    for site, s in plan["sites"].items():
        if not site.startswith("blocks."):
            continue
        i, part = int(site.split(".")[1]), site.split(".")[2]
        if i >= len(block_bits):
            continue
        nb = block_bits[i][0 if part == "attn" else 1]
        for op in ("x", "w"):
            o = s[op]
            top = (1 << o["bits"]) - 1 if o.get("unsigned") else (1 << (o["bits"] - 1)) - 1
            ntop = (1 << nb) - 1 if o.get("unsigned") else (1 << (nb - 1)) - 1
            o["scale"] = o["scale"] * top / ntop
            o["bits"] = nb
    path = os.path.join(tmp, name + "_plan.json")
    with open(path, "w") as f:
        json.dump(plan, f, indent=1)
    out = os.path.join(tmp, name)
    common.run([args.vitq, "export", "--model", src, "--plan", path, "-o", out])
    return out


def max_bits(qdir):
    plan = json.load(open(os.path.join(qdir, "plan.json")))
    return max(max(s["x"]["bits"], s["w"]["bits"]) for s in plan["sites"].values())


def size_ratio(src, qdir):
    return os.path.getsize(os.path.join(qdir, "model.safetensors")) / os.path.getsize(os.path.join(src, "model.safetensors"))


def random_image_folder(root, classes=4, per_class=10, size=32, seed=0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    for c in range(classes):
        d = os.path.join(root, f"class{c}")
        os.makedirs(d, exist_ok=True)
        for i in range(per_class):
            # a random colour gradient plus noise: images that differ in their statistics
            ramp = np.linspace(0, 1, size)[None, :, None] * rng.uniform(-200, 200, 3)
            img = rng.uniform(0, 255, 3) * 0.5 + ramp + rng.normal(0, 20, (size, size, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(os.path.join(d, f"{i}.png"))
    return root


def main():
    args = common.parse_args()
    chk = common.Checker()
    # vitq's OpenMP threads sleep instead of spinning while they wait: on a loaded CI machine the
    # default spin-wait made the runs many times slower (a test setting only, not a benchmark one).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with common.tmpdir() as tmp:
        # 1. Random weights (always): small ViT, random calibration, random images.
        sd = ref_vit.random_vit_state_dict(64, 2, 2, 128, 4, img_size=32, patch_size=8, seed=5)
        sd["head.weight"] *= 30  # a head that tells the random images apart (not one class for all)
        src = os.path.join(tmp, "random")
        os.makedirs(src)
        ref_vit.write_safetensors(os.path.join(src, "model.safetensors"), sd)
        with open(os.path.join(src, "config.json"), "w") as f:
            json.dump({"architecture": "vit_random", "num_classes": 4,
                       "model_args": {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2,
                                      "mlp_ratio": 2.0},
                       "pretrained_cfg": {"input_size": [3, 32, 32], "interpolation": "bilinear", "crop_pct": 1.0,
                                          "mean": [0.5] * 3, "std": [0.5] * 3}}, f)
        data = random_image_folder(os.path.join(tmp, "images"))
        configs = [("W8A8", ["--method", "minmax", "--bits", "8", "--quantize-head", "--unsigned-softmax"]),
                   ("W6A6 per-channel", ["--method", "minmax", "--bits", "6", "--per-channel-weights"]),
                   ("W4A4", ["--method", "percentile", "--bits", "4"]),
                   ("MP 8", ["--method", "minmax", "--mixed-precision", "8", "--mp-sensitivity", "nuclear", "--mp-svd-images", "4"])]
        for name, extra in configs:
            q = quantize(args, tmp, "random_" + name.split()[0], src, None, extra + ["--random-calibration", "8"])
            check_codes(chk, src, q, f"random {name}")
            compare_runs(chk, args, q, data, None, f"random {name}", lambda n: n)
            if name == "MP 8":
                chk.check(max_bits(q) >= 9, f"random {name}: plan has {max_bits(q)}-bit sites (9/10-bit path)")

        # 1b. A Hugging Face-layout copy of the random model: the directory stores timm names and keeps
        #     the HF config (and runs the same).
        import test_forward  # noqa: E402  (its HF conversion and checkpoint helpers)
        hf = os.path.join(tmp, "random_hf")
        test_forward.save_checkpoint(hf, test_forward.to_hf(sd, 2), test_forward.hf_config(64, 2, 2, 128, 32, 8, 4, eps=1e-6))
        q = quantize(args, tmp, "random_hf_W8", hf, None, ["--method", "minmax", "--bits", "8", "--random-calibration", "8"])
        _, s_hf = read_safetensors_raw(os.path.join(q, "model.safetensors"))
        cfg = json.load(open(os.path.join(q, "config.json")))
        chk.check({"blocks.1.attn.qkv.qweight", "pos_embed", "head.weight"} <= set(s_hf)
                  and not any(k.startswith("vit.") for k in s_hf) and cfg.get("model_type") == "vit",
                  "HF-layout source: timm tensor names (fused qkv) next to the HF config")
        compare_runs(chk, args, q, data, None, "random HF layout W8A8", lambda n: n)

        # 2. The shared models: acceptance counts and size ratios.
        # ViT-Ti: the head quantized too (the size goals count it); its mixed-precision plan is set
        # by hand (10-bit MSA in blocks 0-3, 9-bit MLP in blocks 4-7, else 8/6 bits), the CIFAR
        # model's comes from --mixed-precision 8 (nuclear-norm allocation over 6..10 bits).
        mp_ti = [(10, 8)] * 4 + [(8, 9)] * 4 + [(6, 8)] * 4
        shared = [
            ("vit_tiny_patch16_224", "imagenet-sample", lambda n: n - 1, ["--quantize-head"], mp_ti),
            ("vit_cifar10_patch4_32", "cifar10", lambda n: n - n // 500, [], None),
        ]
        goals = {"W8A8": 0.27, "W6A6": 0.21, "W4A4": 0.15}
        for model, dataset, min_agree, head, mp_blocks in shared:
            if not (common.shared_available(args, "models", model) and common.shared_available(args, "data", dataset)):
                continue
            src = os.path.join(args.shared_dir, "models", model)
            droot = os.path.join(args.shared_dir, "data", dataset)
            cmap = os.path.join(droot, "class_map.txt")
            cmap = cmap if os.path.exists(cmap) else None
            configs = [("W8A8", ["--method", "minmax", "--bits", "8"]),
                       ("W6A6", ["--method", "percentile", "--bits", "6", "--unsigned-softmax"]),
                       ("W4A4", ["--method", "minmax", "--bits", "4"]),
                       ("MP8", ["--method", "minmax", "--mixed-precision", "8", "--mp-sensitivity", "nuclear", "--mp-svd-images", "4"])]
            w8 = None
            for name, extra in configs:
                if name == "MP8" and mp_blocks:
                    q = hand_mixed_precision(args, tmp, f"{model}_{name}", src, w8, mp_blocks)
                else:
                    q = quantize(args, tmp, f"{model}_{name}", src, os.path.join(droot, "calib"),
                                 extra + head + ["--calib-size", "16"], cmap)
                w8 = w8 or q
                label = f"{model} {name}"
                compare_runs(chk, args, q, os.path.join(droot, "dev"), cmap, label, min_agree)
                r = size_ratio(src, q)
                if name in goals and head:
                    chk.check(r <= goals[name], f"{label}: file {r:.3f}x the FP32 checkpoint (goal <= {goals[name]})")
                else:
                    print(f"info  {label}: file {r:.3f}x the FP32 checkpoint")
                if name == "MP8":
                    chk.check(max_bits(q) >= 9, f"{label}: plan has {max_bits(q)}-bit sites (9/10-bit path)")
            check_codes(chk, src, q, f"{model} MP8")
    chk.finish()


if __name__ == "__main__":
    main()
