// The ViT forward as ONNX operators, in the order of engine/vit_forward.cpp:
//   Conv (patch embedding) -> Reshape/Transpose to tokens -> Concat class (distillation) token
//   -> Add position embedding -> per block: LayerNormalization, MatMul+Add (qkv), Reshape /
//   Transpose / Gather into q, k, v per head, MatMul, Mul 1/sqrt(d), Softmax, MatMul, back to
//   tokens, MatMul+Add (proj), residual Add; LayerNormalization, MatMul+Add (fc1), GELU in its
//   erf form 0.5·x·(1 + erf(x/√2)) (ONNX's Gelu operator is opset 20), MatMul+Add (fc2),
//   residual Add -> final LayerNormalization -> Gather token 0 (and 1) -> head(s).
// onnx/checker.h first: its parser declares an enumerator MAP_TYPE, which <sys/mman.h> (through
// core/aligned.h) defines as a macro.
#include <onnx/checker.h>

#include "interop/onnx_export.h"

#include <cmath>
#include <vector>

#include "core/error.h"
#include "interop/onnx_graph.h"

namespace vitq {
namespace {

using onnx_export::Attr;
using onnx_export::Graph;

constexpr int kOpset = 17;

// W [out, in] (PyTorch layout) stored transposed, [in, out], for MatMul(x, Wᵀ).
std::string transposed(Graph& g, const std::string& name, const Tensor& w) {
  const int64_t out = w.dim(0), in = w.dim(1);
  std::vector<float> t(size_t(out * in));
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) t[size_t(i * out + o)] = w.ptr()[o * in + i];
  return g.floats(name, {in, out}, t.data());
}

std::string linear(Graph& g, const std::string& name, const std::string& x, const LinearWeights& lw) {
  const std::string y = g.op("MatMul", {x, transposed(g, name + ".weight_t", lw.w)});
  if (lw.b.empty()) return y;
  return g.op("Add", {y, g.floats(name + ".bias", {lw.b.dim(0)}, lw.b.ptr())});
}

std::string layernorm(Graph& g, const std::string& name, const std::string& x, const LayerNormWeights& ln, float eps,
                      int64_t dim) {
  return g.op("LayerNormalization",
              {x, g.floats(name + ".weight", {dim}, ln.gamma.ptr()), g.floats(name + ".bias", {dim}, ln.beta.ptr())},
              {Attr::of("axis", int64_t(-1)), Attr::real("epsilon", eps)});
}

}  // namespace

std::string export_onnx_fp32(const ViTModel& m) {
  const ViTConfig& c = m.cfg;
  if (!m.mlp_rotation_signs.empty())
    fail(ErrorKind::Usage, "ONNX export: the model has an online MLP rotation (a plan's --rotate-mlp); exporting it "
         "is not supported yet");
  for (const BlockWeights& b : m.blocks)
    if (b.has_compensation())
      fail(ErrorKind::Usage, "ONNX export: the model has QwT compensation (a plan's --qwt); exporting it is not "
           "supported yet");
  const int64_t D = c.embed_dim, H = c.num_heads, hd = c.head_dim(), T = c.tokens(), p = c.patch_size;

  onnx::ModelProto model;
  model.set_ir_version(8);
  model.set_producer_name("vitq");
  model.set_producer_version(VITQ_VERSION);
  onnx::OperatorSetIdProto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOpset);
  onnx::GraphProto* gp = model.mutable_graph();
  gp->set_name(c.architecture.empty() ? "vit" : c.architecture);
  Graph g(gp);
  const std::string S = std::to_string(c.img_size);
  g.input("pixels", onnx::TensorProto::FLOAT, {"batch", std::to_string(c.in_chans), S, S});

  // Patch embedding: Conv with the [D, C·p·p] weight viewed as [D, C, p, p] (c, ky, kx order).
  g.set_scope("patch_embed");
  const std::string conv =
      g.op("Conv",
           {"pixels", g.floats("patch_embed.weight", {D, c.in_chans, p, p}, m.patch_embed.w.ptr()),
            g.floats("patch_embed.bias", {D}, m.patch_embed.b.ptr())},
           {Attr::of("kernel_shape", std::vector<int64_t>{p, p}), Attr::of("strides", std::vector<int64_t>{p, p})});
  std::string x = g.op("Transpose", {g.op("Reshape", {conv, g.int64s("shape.tokens_t", {0, D, -1})})},
                       {Attr::of("perm", std::vector<int64_t>{0, 2, 1})});
  // Class (and distillation) tokens, broadcast over the batch: Expand to [batch, 1, D].
  const std::string batch = g.op("Shape", {"pixels"}, {Attr::of("start", int64_t(0)), Attr::of("end", int64_t(1))});
  const std::string tok_shape = g.op("Concat", {batch, g.int64s("shape.1_D", {1, D})}, {Attr::of("axis", int64_t(0))});
  const std::string cls = g.op("Expand", {g.floats("cls_token", {1, 1, D}, m.cls_token.ptr()), tok_shape});
  if (c.distilled) {
    const std::string dist = g.op("Expand", {g.floats("dist_token", {1, 1, D}, m.dist_token.ptr()), tok_shape});
    x = g.op("Concat", {cls, dist, x}, {Attr::of("axis", int64_t(1))});
  } else {
    x = g.op("Concat", {cls, x}, {Attr::of("axis", int64_t(1))});
  }
  x = g.op("Add", {x, g.floats("pos_embed", {1, T, D}, m.pos_embed.ptr())});

  const std::string qkv_shape = g.int64s("shape.qkv", {0, 0, 3, H, hd});
  const std::string tokens_shape = g.int64s("shape.tokens", {0, 0, D});
  const float inv_sqrt_d = 1.0f / std::sqrt(static_cast<float>(hd));
  const std::string scale = g.scalar("attn.scale", inv_sqrt_d);
  const float half = 0.5f, one = 1.0f, inv_sqrt2 = static_cast<float>(1.0 / std::sqrt(2.0));
  const std::string c_half = g.scalar("gelu.half", half), c_one = g.scalar("gelu.one", one),
                    c_isq2 = g.scalar("gelu.inv_sqrt2", inv_sqrt2);
  std::vector<std::string> index(3);
  for (int k = 0; k < 3; ++k) {
    onnx::TensorProto* t = gp->add_initializer();  // a scalar int64 index (Gather drops the axis)
    t->set_name("index." + std::to_string(k));
    t->set_data_type(onnx::TensorProto::INT64);
    t->add_int64_data(k);
    index[size_t(k)] = t->name();
  }
  for (size_t l = 0; l < m.blocks.size(); ++l) {
    const BlockWeights& b = m.blocks[l];
    const std::string pre = "blocks." + std::to_string(l);
    g.set_scope(pre);
    std::string h = layernorm(g, pre + ".norm1", x, b.norm1, c.ln_eps, D);
    const std::string qkv = g.op("Transpose", {g.op("Reshape", {linear(g, pre + ".attn.qkv", h, b.qkv), qkv_shape})},
                                 {Attr::of("perm", std::vector<int64_t>{2, 0, 3, 1, 4})});  // [3, N, H, T, hd]
    const std::string q = g.op("Gather", {qkv, index[0]}, {Attr::of("axis", int64_t(0))});
    const std::string k = g.op("Gather", {qkv, index[1]}, {Attr::of("axis", int64_t(0))});
    const std::string v = g.op("Gather", {qkv, index[2]}, {Attr::of("axis", int64_t(0))});
    const std::string kt = g.op("Transpose", {k}, {Attr::of("perm", std::vector<int64_t>{0, 1, 3, 2})});
    const std::string s = g.op("Mul", {g.op("MatMul", {q, kt}), scale});
    const std::string pr = g.op("Softmax", {s}, {Attr::of("axis", int64_t(-1))});
    std::string o = g.op("Transpose", {g.op("MatMul", {pr, v})}, {Attr::of("perm", std::vector<int64_t>{0, 2, 1, 3})});
    o = g.op("Reshape", {o, tokens_shape});
    x = g.op("Add", {x, linear(g, pre + ".attn.proj", o, b.proj)});
    h = layernorm(g, pre + ".norm2", x, b.norm2, c.ln_eps, D);
    const std::string f = linear(g, pre + ".mlp.fc1", h, b.fc1);
    const std::string erf = g.op("Erf", {g.op("Mul", {f, c_isq2})});
    const std::string gelu = g.op("Mul", {g.op("Mul", {f, c_half}), g.op("Add", {erf, c_one})});
    x = g.op("Add", {x, linear(g, pre + ".mlp.fc2", gelu, b.fc2)});
  }
  g.set_scope("head");
  x = layernorm(g, "norm", x, m.norm, c.ln_eps, D);
  std::string logits = linear(g, "head", g.op("Gather", {x, index[0]}, {Attr::of("axis", int64_t(1))}), m.head);
  if (c.distilled) {
    const std::string l2 = linear(g, "head_dist", g.op("Gather", {x, index[1]}, {Attr::of("axis", int64_t(1))}),
                                  m.head_dist);
    logits = g.op("Mul", {g.op("Add", {logits, l2}), c_half});
  }
  g.rename(logits, "logits");
  g.output("logits", onnx::TensorProto::FLOAT, {"batch", std::to_string(c.num_classes)});
  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    fail(ErrorKind::Internal, "ONNX export: the ONNX checker refused the graph vitq built: ", e.what());
  }
  std::string bytes;
  if (!model.SerializeToString(&bytes))
    fail(ErrorKind::Internal, "ONNX export: the model does not serialize (over protobuf's 2 GB limit?)");
  return bytes;
}

}  // namespace vitq
