"""`vitq export --onnx`: the FP32 graph passes the ONNX checker (Python onnx, full check with
shape inference) and ONNX Runtime (onnxruntime-node, bench/ort_bench.js) computes the logits of
the independent PyTorch reference (tests/parity/ref_vit.py) within 1e-4 of max |logit|, the
tolerance test_forward.py holds vitq's own forward to.

Cases: the bundled Fashion-MNIST model (batch 3 and batch 1: the batch dimension is symbolic),
a random-weight distilled DeiT (two heads), a Hugging Face-layout checkpoint, and the shared
ViT-Ti / CIFAR models on real images when ../shared is present.

QDQ exports of quantization plans (--plan, and from the quantized model directory): ONNX
Runtime's top-1 against vitq's simulation of the same plan (vitq_probe forward --plan) on the
same input tensors — minmax, liu2021 and percentile at W8A8 and W4A4, and vitq's recipe at W8A8
(per-token inputs and the float softmax grid as float operators) and W4A4 (also rotations, the
online MLP rotation and QwT), and vitq's recipe with 8-bit GELU and softmax tables at W8A8 and
W4A4, on 500 Fashion-MNIST test images (>= 99 % each); minmax and vitq
W8A8 on 64 dev images of the shared ViT-Ti, where ONNX Runtime must agree with the simulation at
least as often as the simulation agrees with FP32 (minmax's per-tensor 8-bit plan is fragile: its
own top-1 equals FP32's on ~94 % of them). The logits are not equal:
ONNX Runtime's LayerNorm, softmax and erf differ from vitq's in the last bits, which moves the
odd activation across a rounding boundary of its grid (one site alone: mean |diff| 1e-4; W4A4
minmax on the bundled model, with fewer boundaries: 2e-6). Refusals: --onnx
with -o, and a plan with codes over 8 bits, naming the site (exit 2 each).
On CPUs where ONNX Runtime's int8 MatMul saturates pairwise int16 sums (AVX2 without VNNI; probed
with one worst-case QDQ MatMul, ort_int8_saturates), ONNX Runtime computes another function than an
8-bit plan: those agreements are printed, not checked (4-bit codes stay within int16 and are).

ONNX Runtime: bench/node_modules, else `npm ci --ignore-scripts` of bench/package-lock.json into
the build directory (node and the npm registry needed; skips with the reason otherwise).
Exit status: 0 pass, 1 fail, 77 skip."""
import json
import os
import shutil
import subprocess
import sys

try:
    import numpy as np
    import onnx
    import torch
except ImportError as e:  # pragma: no cover
    print(f"SKIP: needs numpy, onnx and torch ({e}); run with Debian's /usr/bin/python3")
    sys.exit(77)

import common
import ref_vit
from test_forward import hf_config, real_inputs, save_checkpoint, to_hf

TOL = 1e-4


def ort_runtime(args):
    """The directory holding node_modules/onnxruntime-node, or (None, reason)."""
    bench = os.path.join(args.source_dir, "bench")
    if os.path.isdir(os.path.join(bench, "node_modules", "onnxruntime-node")):
        return bench, ""
    if not shutil.which("node") or not shutil.which("npm"):
        return None, "node and npm are not installed (ONNX Runtime runs through onnxruntime-node)"
    dest = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(args.probe))), "ort-node")
    if not os.path.isdir(os.path.join(dest, "node_modules", "onnxruntime-node")):
        os.makedirs(dest, exist_ok=True)
        for f in ("package.json", "package-lock.json"):
            shutil.copy(os.path.join(bench, f), dest)
        r = subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=dest,
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            return None, f"npm ci --ignore-scripts in {dest} failed: {r.stderr.strip()[-400:]}"
    return dest, ""


def ort_logits(args, ort_dir, onnx_path, x, tmp):
    inp, out = os.path.join(tmp, "ort_in.f32"), os.path.join(tmp, "ort_out.f32")
    x.numpy().astype("<f4").tofile(inp)
    env = dict(os.environ, NODE_PATH=os.path.join(ort_dir, "node_modules"))
    common.run(["node", os.path.join(args.source_dir, "bench", "ort_bench.js"), "--model", onnx_path, "--batch",
                x.shape[0], "--threads", 2, "--warmup", 0, "--iters", 1, "--input", inp, "--output", out], env=env)
    return torch.from_numpy(np.fromfile(out, dtype="<f4"))


def ort_int8_saturates(args, ort_dir, tmp):
    """Whether ONNX Runtime's fused int8 MatMul adds adjacent u8·s8 products into saturating int16 on
    this CPU (its AVX2 kernels without VNNI use vpmaddubsw): a QDQ MatMul of u8 codes 255 (zero point
    128) by s8 weights −128 over K = 64, exactly −127·128·64 = −1040384 (output step 8192: code −127)."""
    from onnx import TensorProto, helper, numpy_helper
    K, N = 64, 16
    inits = [numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array(128, np.uint8), "zp_u8"),
             numpy_helper.from_array(np.full((K, N), -128, np.int8), "w"),
             numpy_helper.from_array(np.array(0, np.int8), "zp_s8"),
             numpy_helper.from_array(np.array(8192.0, np.float32), "step_out")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "one", "zp_u8"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "one", "zp_u8"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "one", "zp_s8"], ["wd"]),
             helper.make_node("MatMul", ["xd", "wd"], ["m"]),
             helper.make_node("QuantizeLinear", ["m", "step_out", "zp_u8"], ["mq"]),
             helper.make_node("DequantizeLinear", ["mq", "step_out", "zp_u8"], ["y"])]
    graph = helper.make_graph(nodes, "u8s8_probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 1, K])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, 1, N])], inits)
    path = os.path.join(tmp, "u8s8_probe.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    got = ort_logits(args, ort_dir, path, torch.full((1, 1, 1, K), 127.0), tmp)
    return not bool((got == -127 * 128 * K).all())


FMNIST = "/usr/share/datasets/fashion-mnist"


def fmnist_inputs(n):
    """The first n Fashion-MNIST test images, normalised as the bundled model's config says."""
    import gzip
    with gzip.open(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz")) as f:
        raw = f.read()[16:]
    x = np.frombuffer(raw, np.uint8).reshape(-1, 1, 28, 28)[:n].astype(np.float32)
    return torch.from_numpy(((x / np.float32(255)) - np.float32(0.286)) / np.float32(0.353))


def sim_logits(args, tmp, model_dir, plan, x):
    inp, out = os.path.join(tmp, "sim_in.f32"), os.path.join(tmp, "sim_out.f32")
    x.numpy().astype("<f4").tofile(inp)
    common.run([args.probe, "forward", "--model", model_dir, "--plan", plan, "--input", inp, "--batch", x.shape[0],
                "--out", out])
    return torch.from_numpy(np.fromfile(out, dtype="<f4")).reshape(x.shape[0], -1)


def compare_qdq(args, chk, ort_dir, tmp, name, model_dir, plan, qdir, x, min_agree=None, peer_exact=True):
    """Exports `plan` (and the quantized model directory `qdir`) as QDQ ONNX; ONNX Runtime's top-1
    must equal the simulation's on at least min_agree of the images, or (min_agree None) at least
    as often as the simulation's top-1 equals the FP32 model's: the export may move predictions
    less than the quantization itself does. peer_exact False (8-bit codes where ONNX Runtime's
    int8 kernels saturate, ort_int8_saturates): the agreement is printed, not checked — ONNX
    Runtime then computes another function than the plan's."""
    sim = sim_logits(args, tmp, model_dir, plan, x)
    if min_agree is None:
        inp, out = os.path.join(tmp, "fp_in.f32"), os.path.join(tmp, "fp_out.f32")
        x.numpy().astype("<f4").tofile(inp)
        common.run([args.probe, "forward", "--model", model_dir, "--input", inp, "--batch", x.shape[0], "--out", out])
        fp = torch.from_numpy(np.fromfile(out, dtype="<f4")).reshape(sim.shape)
        min_agree = (sim.argmax(-1) == fp.argmax(-1)).float().mean().item()
        print(f"      {name}: the simulation's top-1 = FP32's on {100 * min_agree:.2f} % of the images")
    for how, cmd in (("--plan", ["--model", model_dir, "--plan", plan]), ("quantized directory", ["--model", qdir])):
        path = os.path.join(tmp, "qdq.onnx")
        common.run([args.vitq, "export", *cmd, "--onnx", path])
        try:
            onnx.checker.check_model(onnx.load(path), full_check=True)
            ok = True
        except Exception as e:  # noqa: BLE001
            ok, why = False, str(e)
        chk.check(ok, f"{name} ({how}): the ONNX checker accepts the QDQ export" + ("" if ok else f": {why}"))
        got = ort_logits(args, ort_dir, path, x, tmp).reshape(sim.shape)
        agree = (got.argmax(-1) == sim.argmax(-1)).float().mean().item()
        d = (got - sim).abs()
        what = (f"{name} ({how}): ONNX Runtime's top-1 = vitq's simulation on {100 * agree:.2f} % of {x.shape[0]} "
                f"images (need {100 * min_agree:.2f} %); |logit diff| mean {d.mean().item():.2g}, max {d.max().item():.2g}")
        if peer_exact:
            chk.check(agree >= min_agree, what)
        else:
            print(f"note  {what} — not checked: ONNX Runtime's int8 MatMul saturates pairwise int16 sums on this CPU")
        os.remove(path)


def main():
    args = common.parse_args()
    chk = common.Checker()
    ort_dir, why = ort_runtime(args)
    if not ort_dir:
        print(f"SKIP: {why}")
        sys.exit(77)
    torch.manual_seed(0)
    with common.tmpdir() as tmp:
        def export_and_compare(name, model_dir, x, ref):
            path = os.path.join(tmp, name.replace(" ", "_").replace("/", "_") + ".onnx")
            common.run([args.vitq, "export", "--model", model_dir, "--onnx", path])
            try:
                onnx.checker.check_model(onnx.load(path), full_check=True)
                chk.check(True, f"{name}: the ONNX checker (full check, shape inference) accepts the export")
            except Exception as e:  # noqa: BLE001 - any checker failure is the test failing
                chk.check(False, f"{name}: the ONNX checker refuses the export: {e}")
            got = ort_logits(args, ort_dir, path, x, tmp).reshape(ref.shape)
            err = (got - ref).abs().max().item()
            bound = TOL * ref.abs().max().item()
            chk.check(err <= bound, f"{name}: max |ONNX Runtime - torch| = {err:.3g}, bound {bound:.3g} "
                                    f"(argmax agree {bool((got.argmax(-1) == ref.argmax(-1)).all())})")
            return path

        # 1. The bundled model; batch 3, then batch 1 on the same file (symbolic batch).
        d = os.path.join(args.source_dir, "models", "vit_fmnist_patch4_28")
        cfg = json.load(open(os.path.join(d, "config.json")))
        sd = ref_vit.read_safetensors(os.path.join(d, "model.safetensors"))
        heads = cfg.get("model_args", cfg).get("num_heads", 4)
        fwd = ref_vit.vit_forward(sd, heads)
        x = torch.randn(3, 1, 28, 28)
        export_and_compare("bundled vit_fmnist_patch4_28, batch 3", d, x, fwd(x))
        export_and_compare("bundled vit_fmnist_patch4_28, batch 1", d, x[:1], fwd(x[:1]))

        # 2. A distilled DeiT with random weights (two heads averaged), 2 blocks.
        sd = ref_vit.random_vit_state_dict(192, 2, 3, 768, 10, distilled=True, seed=5)
        d = os.path.join(tmp, "deit_distilled")
        save_checkpoint(d, sd, {"architecture": "deit_tiny_distilled_patch16_224", "num_classes": 10,
                          "model_args": {"depth": 2}})
        x = torch.randn(2, 3, 224, 224)
        export_and_compare("random distilled DeiT-T (2 blocks)", d, x, ref_vit.vit_forward(sd, 3, distilled=True)(x))

        # 3. Hugging Face layout (layer_norm_eps 1e-12 by default).
        sd = ref_vit.random_vit_state_dict(192, 2, 3, 768, 10, seed=6)
        d = os.path.join(tmp, "hf")
        save_checkpoint(d, to_hf(sd, 2), hf_config(192, 2, 3, 768, 224, 16, 10))
        export_and_compare("Hugging Face layout", d, x, ref_vit.vit_forward(sd, 3, eps=1e-12)(x))

        # 4. The shared models on real images.
        if common.shared_available(args, "models", "vit_tiny_patch16_224"):
            d = os.path.join(args.shared_dir, "models", "vit_tiny_patch16_224")
            sd = ref_vit.read_safetensors(os.path.join(d, "model.safetensors"))
            x = real_inputs(args, "data/imagenet-sample/dev", 4, 224, 0.9, "bicubic", (0.5,) * 3, (0.5,) * 3)
            export_and_compare("shared vit_tiny_patch16_224, 4 real images", d, x, ref_vit.vit_forward(sd, 3)(x))
        if common.shared_available(args, "models", "vit_cifar10_patch4_32"):
            d = os.path.join(args.shared_dir, "models", "vit_cifar10_patch4_32")
            sd = ref_vit.read_safetensors(os.path.join(d, "model.safetensors"))
            x = real_inputs(args, "data/cifar10/dev", 8, 32, 1.0, "bilinear", (0.4914, 0.4822, 0.4465),
                            (0.247, 0.2435, 0.2616))
            export_and_compare("shared vit_cifar10_patch4_32, 8 real images", d, x, ref_vit.vit_forward(sd, 4)(x))

        # 5. QDQ exports of plans: ONNX Runtime's predictions against vitq's simulation of the same
        #    plan (vitq_probe forward --plan) on the same input tensors.
        bundled = os.path.join(args.source_dir, "models", "vit_fmnist_patch4_28")
        saturates = ort_int8_saturates(args, ort_dir, tmp)
        print(f"      ONNX Runtime's int8 MatMul on this CPU: "
              f"{'saturates pairwise int16 sums (u8 255 x s8 -128 probe); 8-bit QDQ agreement is printed, not checked' if saturates else 'exact (u8 255 x s8 -128 probe)'}")
        if os.path.isdir(FMNIST):
            x = fmnist_inputs(500)
            calib = os.path.join(FMNIST, "train-images-idx3-ubyte.gz")
            for method in ("minmax", "liu2021", "percentile", "vitq"):
                for bits in (8, 4):
                    q = os.path.join(tmp, f"fm_{method}_{bits}")
                    common.run([args.vitq, "quantize", "--model", bundled, "--calib", calib, "--calib-size", 32,
                                "--method", method, "--bits", bits, "-o", q, "-q"])
                    compare_qdq(args, chk, ort_dir, tmp, f"bundled model, {method} W{bits}A{bits}", bundled,
                                os.path.join(q, "plan.json"), q, x, min_agree=0.99, peer_exact=bits < 8 or not saturates)
            # GELU and softmax tables (Gather from vitq's own table floats; the softmax's sum is
            # ReduceSum's, in its order).
            for bits in (8, 4):
                q = os.path.join(tmp, f"fm_vitq_tables_{bits}")
                common.run([args.vitq, "quantize", "--model", bundled, "--calib", calib, "--calib-size", 32,
                            "--method", "vitq", "--bits", bits, "--gelu-table", 8, "--softmax-table", 8, "-o", q, "-q"])
                compare_qdq(args, chk, ort_dir, tmp, f"bundled model, vitq W{bits}A{bits} with 8-bit GELU and softmax "
                            "tables", bundled, os.path.join(q, "plan.json"), q, x, min_agree=0.99,
                            peer_exact=bits < 8 or not saturates)
        else:
            print(f"SKIPPED (part): {FMNIST} absent (Debian package dataset-fashion-mnist); QDQ on the bundled model")
        if common.shared_available(args, "models", "vit_tiny_patch16_224"):
            d = os.path.join(args.shared_dir, "models", "vit_tiny_patch16_224")
            x = real_inputs(args, "data/imagenet-sample/dev", 64, 224, 0.9, "bicubic", (0.5,) * 3, (0.5,) * 3,
                            stride=6)
            for method in ("minmax", "vitq"):
                q = os.path.join(tmp, f"ti_{method}8")
                common.run([args.vitq, "quantize", "--model", d, "--calib",
                            os.path.join(args.shared_dir, "data/imagenet-sample/calib"), "--calib-size", 64,
                            "--method", method, "--bits", 8, "-o", q, "-q"])
                compare_qdq(args, chk, ort_dir, tmp, f"shared ViT-Ti, {method} W8A8, 64 dev images", d,
                            os.path.join(q, "plan.json"), q, x, peer_exact=not saturates)

        # 6. Refusals, each a usage error (exit 2) naming what is wrong.
        r = subprocess.run([args.vitq, "export", "--model", bundled, "--onnx", os.path.join(tmp, "x.onnx"),
                            "-o", os.path.join(tmp, "qdir")], capture_output=True, text=True)
        chk.check(r.returncode == 2 and "-o" in r.stderr and not os.path.exists(os.path.join(tmp, "x.onnx")),
                  f"--onnx with -o: exit {r.returncode} (want 2), message names -o, no file written")
        if os.path.isdir(FMNIST):
            q = os.path.join(tmp, "fm_minmax_8")  # made above; one site's input widened to 10 bits
            plan = json.load(open(os.path.join(q, "plan.json")))
            plan["sites"]["blocks.1.mlp.fc2"]["x"]["bits"] = 10
            wide = os.path.join(tmp, "wide_plan.json")
            json.dump(plan, open(wide, "w"))
            r = subprocess.run([args.vitq, "export", "--model", bundled, "--plan", wide,
                                "--onnx", os.path.join(tmp, "x.onnx")], capture_output=True, text=True)
            chk.check(r.returncode == 2 and "site blocks.1.mlp.fc2" in r.stderr and "10-bit" in r.stderr and
                      not os.path.exists(os.path.join(tmp, "x.onnx")),
                      f"a plan with 10-bit codes: exit {r.returncode} (want 2), the message names the site "
                      f"and '10-bit': {r.stderr.strip()[:200]}")
    chk.finish()


if __name__ == "__main__":
    main()
