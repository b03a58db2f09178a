#!/usr/bin/python3
"""Rewrites an FP32 ONNX ViT (bench/export_onnx.py) into the graph ONNX Runtime's dynamic int8
quantization (onnxruntime.quantization.quantize_dynamic) emits for its MatMuls, built here with
Debian's python3-onnx only (no onnxruntime Python package):

    x_q, x_scale, x_zp = DynamicQuantizeLinear(x)          uint8 activations, per tensor, per call
    s   = Mul(x_scale, w_scale)                             w_scale: per output channel [N]
    y_i = MatMulInteger(x_q, W_q, x_zp, w_zp)               W_q: int8 [K, N], symmetric (w_zp = 0)
    y   = Mul(Cast(y_i, FLOAT), s)

for every MatMul whose second input is a 2-D weight initializer (qkv, proj, fc1, fc2). ONNX
Runtime fuses each such group into one DynamicQuantizeMatMul kernel at graph optimisation level
'all'. Weights: per output channel, step = max|W[:, n]| / 127, codes clip(rint(W / step), ±127).
Left in FP32, as quantize_dynamic's MatMul/MatMulInteger path leaves them: the attention
matmuls (both operands are activations), the patch-embedding Conv and the classifier Gemm.

  /usr/bin/python3 bench/quantize_onnx_int8.py --model vit.onnx --out vit_int8.onnx
"""
import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def quantize(in_path, out_path):
    m = onnx.load(in_path)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    nodes, new_inits, dropped, count = [], [], set(), 0
    for n in g.node:
        w = inits.get(n.input[1]) if n.op_type == "MatMul" and len(n.input) == 2 else None
        if w is None or len(w.dims) != 2:
            nodes.append(n)
            continue
        W = numpy_helper.to_array(w).astype(np.float32)  # [K, N]
        amax = np.abs(W).max(axis=0)
        step = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        Wq = np.clip(np.rint(W / step), -127, 127).astype(np.int8)
        p = f"{n.name or n.output[0]}_int8"
        new_inits += [numpy_helper.from_array(Wq, p + "/W_quantized"),
                      numpy_helper.from_array(step, p + "/W_scale"),
                      numpy_helper.from_array(np.zeros(W.shape[1], np.int8), p + "/W_zero_point")]
        x = n.input[0]
        nodes += [
            helper.make_node("DynamicQuantizeLinear", [x], [p + "/x_q", p + "/x_scale", p + "/x_zp"], name=p + "/dql"),
            helper.make_node("Mul", [p + "/x_scale", p + "/W_scale"], [p + "/scale"], name=p + "/scale_mul"),
            helper.make_node("MatMulInteger", [p + "/x_q", p + "/W_quantized", p + "/x_zp", p + "/W_zero_point"],
                             [p + "/y_int"], name=p + "/matmul_integer"),
            helper.make_node("Cast", [p + "/y_int"], [p + "/y_f"], to=TensorProto.FLOAT, name=p + "/cast"),
            helper.make_node("Mul", [p + "/y_f", p + "/scale"], [n.output[0]], name=p + "/rescale"),
        ]
        dropped.add(w.name)
        count += 1
    still_used = {i for node in nodes for i in node.input}
    keep = [i for i in g.initializer if i.name not in dropped or i.name in still_used]
    del g.node[:]
    g.node.extend(nodes)
    del g.initializer[:]
    g.initializer.extend(keep + new_inits)
    onnx.checker.check_model(m)
    onnx.save(m, out_path)
    return count


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="FP32 ONNX file (bench/export_onnx.py)")
    ap.add_argument("--out", required=True, help="int8 ONNX file to write")
    a = ap.parse_args()
    n = quantize(a.model, a.out)
    print(f"wrote {a.out}: {n} MatMuls as DynamicQuantizeLinear + MatMulInteger (int8 per-channel weights)")


if __name__ == "__main__":
    main()
