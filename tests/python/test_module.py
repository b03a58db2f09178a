"""The Python module (python/vitq over src/python/module.cpp), imported from the build tree.

1. FP32: Model.predict on Fashion-MNIST test images written as PNG files equals the independent
   PyTorch reference (tests/parity/ref_vit.py) within 1e-4 of max |logit| and gives the top-1
   `vitq eval --json` gives on the same files; Model.preprocess of a path equals vitq_probe's
   preprocessing (the CLI's code) bit for bit, and of the PIL image and of its pixels the same.
2. vitq.quantize with keyword options writes the same plan.json bytes as `vitq quantize` with the
   same options; the quantized directory loaded in integers, simulated, and its plan on the FP32
   checkpoint each predict the classes `vitq eval` predicts for that model on every image.
3. Errors are vitq.Error with the CLI's message and exit code: a missing model, a wrong input
   shape, a bad option value, a corrupt image.
4. `pip install` of the source tree into a virtual environment (no network: --no-index, the
   module built here via VITQ_BUILD_DIR) imports from outside the tree and predicts the same logits.

Exit status: 0 pass, 1 fail, 77 skip."""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

SKIP = 77
FMNIST = "/usr/share/datasets/fashion-mnist"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vitq", required=True)
    ap.add_argument("--probe", required=True)
    ap.add_argument("--source-dir", required=True)
    ap.add_argument("--python-dir", required=True, help="<build>/python, holding the vitq package")
    args = ap.parse_args()
    for a in ("vitq", "probe", "source_dir", "python_dir"):
        setattr(args, a, os.path.abspath(getattr(args, a)))
    try:
        import numpy as np
        import torch
        from PIL import Image
    except ImportError as e:
        print(f"SKIP: needs numpy, torch and PIL ({e}); run with Debian's /usr/bin/python3")
        sys.exit(SKIP)
    if not os.path.isdir(FMNIST):
        print(f"SKIP: {FMNIST} (Debian package dataset-fashion-mnist) is not installed")
        sys.exit(SKIP)
    sys.path.insert(0, args.python_dir)
    sys.path.insert(0, os.path.join(args.source_dir, "tests", "parity"))
    import vitq
    import ref_vit

    failures = []

    def check(ok, msg):
        print(("ok    " if ok else "FAIL  ") + msg, flush=True)
        if not ok:
            failures.append(msg)

    def run(cmd):
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
        if r.returncode != 0:
            print("command failed:", " ".join(map(str, cmd)), r.stdout, r.stderr, sep="\n")
            sys.exit(1)
        return r.stdout

    bundled = os.path.join(args.source_dir, "models", "vit_fmnist_patch4_28")
    calib = os.path.join(FMNIST, "train-images-idx3-ubyte.gz")
    with tempfile.TemporaryDirectory(prefix="vitq-python-") as tmp:
        # 40 test images as PNG files in an ImageFolder tree (folder c<label>).
        import gzip
        with gzip.open(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz")) as f:
            px = np.frombuffer(f.read()[16:], np.uint8).reshape(-1, 28, 28)[:40]
        with gzip.open(os.path.join(FMNIST, "t10k-labels-idx1-ubyte.gz")) as f:
            labels = np.frombuffer(f.read()[8:], np.uint8)[:40]
        data = os.path.join(tmp, "data")
        paths = []
        for i, (p, y) in enumerate(zip(px, labels)):
            d = os.path.join(data, f"c{y}")
            os.makedirs(d, exist_ok=True)
            paths.append(os.path.join(d, f"{i:03d}.png"))
            Image.fromarray(p, "L").save(paths[-1])
        paths.sort()  # the ImageFolder order: sorted folders, sorted files
        for y in range(10):  # every class folder present, so that labels are folder indices
            os.makedirs(os.path.join(data, f"c{y}"), exist_ok=True)

        def eval_predictions(*model_args):
            out = os.path.join(tmp, "eval.json")
            run([args.vitq, "eval", *model_args, "--data", data, "--json", out, "-q"])
            return json.load(open(out))["predictions"]

        # 1. FP32. Two threads here and in the venv below: importing torch (for the reference) sets
        # the process's OpenMP threads to its own count, and oneDNN's AVX2 sgemm splits its sums by
        # the thread count (the logits move by ~1e-6), so both sides name it.
        vitq.set_threads(2)
        m = vitq.load(bundled)
        check(m.engine == "fp32" and m.config["img_size"] == 28 and m.config["in_chans"] == 1,
              f"vitq.load(bundled): engine {m.engine}, config {m.config['img_size']} px, {m.config['in_chans']} channel")
        x = np.stack([m.preprocess(p) for p in paths])
        probe_x = []
        for p in paths[:5]:
            o = os.path.join(tmp, "pre.f32")
            c = m.config
            run([args.probe, "preprocess", "--image", p, "--out", o, "--height", 28, "--width", 28, "--channels", 1,
                 "--interp", c["interpolation"], "--crop-pct", c["crop_pct"], "--mean", *c["mean"], "--std", *c["std"]])
            probe_x.append(np.fromfile(o, dtype="<f4"))
        check(all(np.array_equal(x[i].ravel(), probe_x[i]) for i in range(5)),
              "Model.preprocess(path) = the CLI's preprocessing (vitq_probe preprocess), bit for bit, 5 images")
        pil = np.stack([m.preprocess(Image.open(p)) for p in paths[:5]])
        arr = np.stack([m.preprocess(np.asarray(Image.open(p))) for p in paths[:5]])
        check(np.array_equal(pil, x[:5]) and np.array_equal(arr, x[:5]),
              "Model.preprocess of a PIL image and of its uint8 pixels = of the path")
        logits = m.predict(x)
        sd = ref_vit.read_safetensors(os.path.join(bundled, "model.safetensors"))
        cfg = json.load(open(os.path.join(bundled, "config.json")))
        ref = ref_vit.vit_forward(sd, cfg["model_args"]["num_heads"])(torch.from_numpy(x)).numpy()
        err, bound = float(np.abs(logits - ref).max()), 1e-4 * float(np.abs(ref).max())
        check(logits.shape == (40, 10) and logits.dtype == np.float32 and err <= bound,
              f"Model.predict [40, 1, 28, 28] -> {logits.shape}: max |vitq - torch| {err:.3g} (bound {bound:.3g})")
        one = m.predict(x[0])
        check(one.shape == (10,) and np.array_equal(one, logits[0]), "Model.predict of one image [C, H, W] -> [classes]")
        check(np.array_equal(m.predict(x.astype(np.float64)), logits), "Model.predict converts float64 input")
        check(list(logits.argmax(1)) == eval_predictions("--model", bundled),
              "FP32: Model.predict's top-1 = vitq eval's on all 40 images")

        # 2. quantize: the same plan bytes as the CLI; three engines, each = vitq eval's predictions.
        q_py, q_cli = os.path.join(tmp, "q_py"), os.path.join(tmp, "q_cli")
        res = vitq.quantize(bundled, calib=calib, method="vitq", bits=4, out=q_py, calib_size=32, token_clip=1,
                            threads=2)
        run([args.vitq, "quantize", "--model", bundled, "--calib", calib, "--method", "vitq", "--bits", 4, "-o", q_cli,
             "--calib-size", 32, "--token-clip", 1, "--threads", 2, "-q"])
        same = open(res["plan"], "rb").read() == open(os.path.join(q_cli, "plan.json"), "rb").read()
        check(same and res["report"]["method"] == "vitq" and len(res["report"]["sites"]) > 0,
              "vitq.quantize(..., calib_size=32, token_clip=1, threads=2) writes the plan.json of `vitq quantize "
              "--calib-size 32 --token-clip 1 --threads 2` byte for byte")
        for name, model, eval_args in (
                ("integer", vitq.load(q_py), ["--model", q_py]),
                ("simulated", vitq.load(q_py, simulate=True), ["--model", q_py, "--simulate"]),
                ("plan on FP32", vitq.load(bundled, plan=res["plan"]), ["--model", bundled, "--plan", res["plan"]])):
            got = list(model.predict(x).argmax(1))
            check(got == eval_predictions(*eval_args),
                  f"W4A4 {name} ({model.engine}): Model.predict's top-1 = vitq eval's on all 40 images")

        # 3. Errors: vitq.Error with the CLI's message and exit code.
        def raises(fn, code, words, what):
            try:
                fn()
            except vitq.Error as e:
                msg = str(e)
                check(getattr(e, "exit_code", None) == code and all(w in msg for w in words),
                      f"{what}: vitq.Error exit_code {getattr(e, 'exit_code', None)} (want {code}): {msg[:150]}")
                return
            except Exception as e:  # noqa: BLE001 - any other exception fails the check
                check(False, f"{what}: raised {type(e).__name__} ({e}), not vitq.Error")
                return
            check(False, f"{what}: no exception")
        missing = os.path.join(tmp, "no_such_model")
        raises(lambda: vitq.load(missing), 5, [missing], "vitq.load of a missing directory")
        raises(lambda: m.predict(np.zeros((2, 3, 5, 5), np.float32)), 2, ["[N, 1, 28, 28]", "[2, 3, 5, 5]"],
               "predict with the wrong shape")
        raises(lambda: m.predict(np.zeros((2, 1, 28, 28), np.int32)), 2, ["float32"], "predict with int32 input")
        raises(lambda: vitq.quantize(bundled, calib=calib, out=os.path.join(tmp, "q_bad"), bits=99), 2, ["--bits"],
               "vitq.quantize(bits=99)")
        bad = os.path.join(tmp, "broken.png")
        with open(bad, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
        raises(lambda: m.preprocess(bad), 4, [bad], "Model.preprocess of a corrupt PNG")
        raises(lambda: vitq.load(bundled, simulate=True), 2, ["simulate"], "simulate=True on an FP32 checkpoint")

        # 4. pip install into a virtual environment, no network.
        venv = os.path.join(tmp, "venv")
        r = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], capture_output=True,
                           text=True)
        if r.returncode != 0:
            print(f"SKIPPED (part): python3 -m venv failed (Debian python3-venv missing?): {r.stderr.strip()[:200]}")
        else:
            build_dir = os.path.dirname(os.path.abspath(args.python_dir))
            src = os.path.join(tmp, "src")  # a copy of the tree's Python packaging (pip builds in place)
            os.makedirs(src)
            for f in ("setup.py", "CMakeLists.txt"):
                shutil.copy(os.path.join(args.source_dir, f), src)
            shutil.copytree(os.path.join(args.source_dir, "python"), os.path.join(src, "python"))
            r = subprocess.run([os.path.join(venv, "bin", "python"), "-m", "pip", "install", "--no-index", src],
                               capture_output=True, text=True, env=dict(os.environ, VITQ_BUILD_DIR=build_dir),
                               cwd=tmp)
            check(r.returncode == 0, "pip install --no-index <source> into a venv" +
                  ("" if r.returncode == 0 else f": {(r.stdout + r.stderr).strip()[-600:]}"))
            np.save(os.path.join(tmp, "x.npy"), x[:4])
            code = ("import sys, numpy as np, vitq; vitq.set_threads(2); m = vitq.load(sys.argv[1]); "
                    "np.save(sys.argv[3], m.predict(np.load(sys.argv[2]))); print(vitq.__file__)")
            r = subprocess.run([os.path.join(venv, "bin", "python"), "-c", code, bundled, os.path.join(tmp, "x.npy"),
                                os.path.join(tmp, "y.npy")], capture_output=True, text=True, cwd=tmp)
            ok = r.returncode == 0 and r.stdout.strip().startswith(venv)
            check(ok and np.array_equal(np.load(os.path.join(tmp, "y.npy")), logits[:4]),
                  f"the installed package imports from the venv ({r.stdout.strip() or r.stderr.strip()[-300:]}) "
                  "and predicts the build tree's logits")
    if failures:
        print(f"{len(failures)} check(s) failed")
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
