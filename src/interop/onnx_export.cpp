// The ViT forward as ONNX operators, in the order of engine/vit_forward.cpp:
//   Conv (patch embedding) -> Reshape/Transpose to tokens -> Concat class (distillation) token
//   -> Add position embedding -> per block: LayerNormalization, MatMul+Add (qkv), Reshape /
//   Transpose / Gather into q, k, v per head, MatMul, Mul 1/sqrt(d), Softmax, MatMul, back to
//   tokens, MatMul+Add (proj), residual Add; LayerNormalization, MatMul+Add (fc1), GELU in its
//   erf form 0.5·x·(1 + erf(x/√2)) (ONNX's Gelu operator is opset 20), MatMul+Add (fc2),
//   residual Add -> final LayerNormalization -> Gather token 0 (and 1) -> head(s).
// With a plan, each matmul site's operands pass through QuantizeLinear/DequantizeLinear, or the
// float operators that compute vitq's codes where QDQ cannot (onnx_export.h says how); a rotated
// model multiplies the GELU output by its rotation, a compensated block adds its QwT map.

// onnx/checker.h first: its parser declares an enumerator MAP_TYPE, which <sys/mman.h> (through
// core/aligned.h) defines as a macro.
#include <onnx/checker.h>

#include "interop/onnx_export.h"

#include <cmath>
#include <map>
#include <vector>

#include "core/error.h"
#include "interop/onnx_graph.h"
#include "numerics/hadamard.h"
#include "numerics/level_grid.h"
#include "numerics/quantizer.h"
#include "numerics/softmax_table.h"
#include "quant/gelu_table.h"
#include "quant/weight_codes.h"

namespace vitq {
namespace {

using onnx_export::Attr;
using onnx_export::Graph;

constexpr int kOpset = 17;

std::vector<int64_t> ints(std::initializer_list<int64_t> v) { return v; }

class Exporter {
 public:
  Exporter(onnx::GraphProto* gp, const ViTModel& m, const QuantPlan* plan, OnnxExportInfo& info)
      : g_(gp), m_(m), plan_(plan), info_(info) {}

  void build();

 private:
  const SitePlan* site(SiteId id) const {
    if (!plan_) return nullptr;
    const SitePlan* sp = plan_->find(id);
    return sp && (sp->x.quantized() || sp->w.quantized() || !sp->bias_correction.empty()) ? sp : nullptr;
  }
  void check_operand(const std::string& site, const char* which, const OperandQuant& q) const;
  // x̂ of an activation operand; heads > 0: per-head steps on axis 1 of a rank-4 tensor.
  std::string act(const std::string& name, const std::string& x, const OperandQuant& q, int heads);
  // x̂ of a per-token input (quantizer.h, token_quant) and of a level grid (level_grid.h), in
  // standard float operators that compute what vitq computes.
  std::string act_per_token(const std::string& name, const std::string& x, const OperandQuant& q);
  std::string act_rows_symmetric(const std::string& x, const OperandQuant& q, int64_t axis);
  std::string act_levels(const std::string& x, const OperandQuant& q);
  // The weight W [N, K] as MatMul's right operand [K, N] (quantized under sp if given).
  std::string weight_t(const std::string& name, const LinearWeights& lw, const SitePlan* sp);
  // DequantizeLinear of int8 weight codes of shape `dims` whose output channel is `axis`, with
  // sp's per-channel (or single) step, plus sp's weight offset o_c broadcast along that axis.
  std::string dequantized_weight(const std::string& name, const std::vector<int8_t>& codes,
                                 const std::vector<int64_t>& dims, int64_t axis, const SitePlan& sp);
  std::string linear(SiteId id, const std::string& name, const std::string& x, const LinearWeights& lw);
  std::string linear_fp32(const std::string& name, const std::string& x, const LinearWeights& lw) {
    const std::string y = g_.op("MatMul", {x, weight_t(name, lw, nullptr)});
    return lw.b.empty() ? y : g_.op("Add", {y, g_.floats(name + ".bias", {lw.out()}, lw.b.ptr())});
  }
  std::string layernorm(const std::string& name, const std::string& x, const LayerNormWeights& ln);
  std::string attention_matmul(SiteId id, const std::string& a, const std::string& b, int64_t cols);
  // The parts of build(), in the order their nodes are made: the patch embedding's tokens
  // [batch, patches, D]; with the class (and distillation) tokens and the position embedding;
  // the shared constants of the blocks; one block; the head (the graph's output).
  std::string patch_embedding();
  std::string with_class_tokens(const std::string& patches);
  struct BlockConstants {
    std::string index[3], qkv_shape, tokens_shape, scale, mlp_rotation, half, one, inv_sqrt2;
    // The plan's softmax exponent table (empty without one): its 2^bits exponentials, the
    // factor k = scale·(2^bits − 1)/range and the last index.
    std::string softmax_exp, softmax_k, softmax_last, axes_last;
  };
  // The attention's probabilities from the unscaled scores Q·Kᵀ: ONNX's Softmax, or the plan's
  // exponent table.
  std::string softmax(const std::string& scores, const BlockConstants& k);
  // GELU of fc1's output f: the erf form, or the plan's table of block l.
  std::string gelu(int l, const std::string& f, const BlockConstants& k);
  BlockConstants block_constants();
  std::string block(int l, const std::string& x, const BlockConstants& k);
  void head(const std::string& x, const BlockConstants& k);

  Graph g_;
  const ViTModel& m_;
  const QuantPlan* plan_;
  OnnxExportInfo& info_;
  std::map<std::string, std::string> shared_;  // initializers made once (level tables, constants)
  // A scalar initializer shared by every node that names it (the name must say the value).
  std::string constant(const std::string& name, float v) {
    std::string& s = shared_[name];
    if (s.empty()) s = g_.scalar(name, v);
    return s;
  }
};

void Exporter::check_operand(const std::string& site, const char* which, const OperandQuant& q) const {
  auto refuse = [&](const std::string& what) {
    fail(ErrorKind::Usage, "ONNX export: site ", site, ", ", which, ": ", what,
         " cannot be expressed as int8 QuantizeLinear/DequantizeLinear");
  };
  if (!q.quantized()) return;
  if (q.bits > 8 && !is_level_grid(q.grid)) refuse(cat(q.bits, "-bit codes"));
  for (int b : q.channel_bits)
    if (b > 8) refuse(cat(b, "-bit channel codes"));
}

std::string Exporter::act(const std::string& name, const std::string& x, const OperandQuant& q, int heads) {
  if (q.per_token && heads > 0) fail(ErrorKind::Internal, "ONNX export: ", name, ": per-token attention operand");
  if (q.per_token) {
    ++info_.per_token_inputs;
    return act_per_token(name, x, q);
  }
  if (is_level_grid(q.grid)) {
    ++info_.level_grid_inputs;
    return act_levels(x, q);
  }
  ++info_.qdq_operands;
  const bool per_head = heads > 0 && q.per_head();
  const int elem = q.grid == Grid::Unsigned ? onnx::TensorProto::UINT8 : onnx::TensorProto::INT8;
  const QRange r = q.range();
  const int32_t type_lo = q.grid == Grid::Unsigned ? 0 : -128, type_hi = q.grid == Grid::Unsigned ? 255 : 127;
  std::vector<float> steps = per_head ? q.head_scales : std::vector<float>{q.scale};
  if (per_head && int(steps.size()) != heads)
    fail(ErrorKind::Model, "ONNX export: ", name, " has ", steps.size(), " head steps for ", heads, " heads");
  const std::vector<int64_t> dims = per_head ? std::vector<int64_t>{int64_t(heads)} : std::vector<int64_t>{};
  std::string in = x;
  if (r.lo != type_lo || r.hi != type_hi) {  // the grid is narrower than the type: clip first
    std::vector<float> lo(steps.size()), hi(steps.size());
    for (size_t h = 0; h < steps.size(); ++h) lo[h] = steps[h] * float(r.lo), hi[h] = steps[h] * float(r.hi);
    const std::vector<int64_t> bdims = per_head ? ints({1, heads, 1, 1}) : std::vector<int64_t>{};
    in = g_.op("Min", {g_.op("Max", {in, g_.floats(name + ".clip_lo", bdims, lo.data())}),
                       g_.floats(name + ".clip_hi", bdims, hi.data())});
  }
  const std::string s = g_.floats(name + ".step", dims, steps.data());
  const std::string zp = g_.zeros(name + ".zero_point", dims, elem);
  const std::vector<Attr> axis = per_head ? std::vector<Attr>{Attr::of("axis", int64_t(1))} : std::vector<Attr>{};
  return g_.op("DequantizeLinear", {g_.op("QuantizeLinear", {in, s, zp}, axis), s, zp}, axis);
}

// Per token (the rows of x's last axis): mn = α·min(min x, 0), mx = α·max(max x, 0),
// Δ = (mx − mn)/(2^b − 1)·s (s = kTokenStepStretch; 1 if not ≥ 1e-30), lo = round(mn/Δ), x̂ = clip(round(x/Δ), lo, lo + 2^b − 1)·Δ —
// the same float operations in the same order as token_quant and code_f, so the codes are vitq's.
// In channel groups (token_group): x reshaped to [rows, K/g, g], the same on its last axis, then
// reshaped back to x's shape.
std::string Exporter::act_per_token(const std::string& name, const std::string& x, const OperandQuant& q) {
  if (q.groups_tokens()) {
    OperandQuant whole = q;
    whole.token_group = 0;
    const std::string xg = g_.op("Reshape", {x, g_.int64s(name + ".token_groups", {-1, q.token_group})});
    return g_.op("Reshape", {act_per_token(name, xg, whole), g_.op("Shape", {x})});
  }
  const std::vector<Attr> last_axis{Attr::of("axes", ints({-1})), Attr::of("keepdims", int64_t(1))};
  const std::string zero = constant("const.zero", 0.0f);
  std::string mn = g_.op("Min", {g_.op("ReduceMin", {x}, last_axis), zero});
  std::string mx = g_.op("Max", {g_.op("ReduceMax", {x}, last_axis), zero});
  if (q.token_clip != 1.0f) {
    const std::string a = g_.scalar(name + ".token_clip", q.token_clip);
    mn = g_.op("Mul", {mn, a});
    mx = g_.op("Mul", {mx, a});
  }
  const int32_t span = (int32_t(1) << q.bits) - 1;
  const std::string levels = constant(cat("const.", span), float(span));
  std::string d = g_.op("Div", {g_.op("Sub", {mx, mn}), levels});
  d = g_.op("Mul", {d, constant("const.token_step_stretch", kTokenStepStretch)});
  d = g_.op("Where", {g_.op("GreaterOrEqual", {d, constant("const.1e-30", 1e-30f)}), d, constant("const.one", 1.0f)});
  const std::string lo = g_.op("Round", {g_.op("Div", {mn, d})});
  const std::string hi = g_.op("Add", {lo, levels});
  const std::string code = g_.op("Min", {g_.op("Max", {g_.op("Round", {g_.op("Div", {x, d})}), lo}), hi});
  return g_.op("Mul", {code, d});
}

// Per-token Q or K (symmetric rows along `axis`: −1 for Q [.., T, d], −2 for Kᵀ [.., d, T]):
// Δ = max(max|x|, 1e-12) / hi · s, x̂ = clip(round(x/Δ), lo, hi)·Δ — token_step_symmetric and
// code_f's float operations in their order, so the codes are vitq's.
std::string Exporter::act_rows_symmetric(const std::string& x, const OperandQuant& q, int64_t axis) {
  ++info_.per_token_inputs;
  const QRange r = q.range();
  const std::vector<Attr> along{Attr::of("axes", ints({axis})), Attr::of("keepdims", int64_t(1))};
  std::string d = g_.op("Max", {g_.op("ReduceMax", {g_.op("Abs", {x})}, along), constant("const.1e-12", 1e-12f)});
  d = g_.op("Div", {d, constant(cat("const.", r.hi), float(r.hi))});
  d = g_.op("Mul", {d, constant("const.token_step_stretch", kTokenStepStretch)});
  const std::string code = g_.op("Min", {g_.op("Max", {g_.op("Round", {g_.op("Div", {x, d})}),
                                                       constant(cat("const.", r.lo), float(r.lo))}),
                                         constant(cat("const.", r.hi), float(r.hi))});
  return g_.op("Mul", {code, d});
}

// A level grid: v = clip(round(p·2^15), 0, 2^15), then the grid's table (level_grid.h: the level
// nearest to v, ties up) looked up by Gather — one 2^15 + 1-entry table of p̂ = level·2^−15 per grid.
std::string Exporter::act_levels(const std::string& x, const OperandQuant& q) {
  const std::string key = cat(grid_name(q.grid), q.bits);
  std::string& table = shared_["levels." + key];
  if (table.empty()) {
    const LevelGrid& grid = LevelGrid::get(q.grid, q.bits);
    std::vector<float> t(size_t(kLevelOne) + 1);
    for (int32_t v = 0; v <= kLevelOne; ++v) t[size_t(v)] = float(grid.of_fixed(v)) * kLevelStep;
    table = g_.floats("level_grid." + key, {int64_t(t.size())}, t.data());
  }
  const std::string one = constant(cat("const.", kLevelOne), float(kLevelOne)), zero = constant("const.zero", 0.0f);
  const std::string v = g_.op("Min", {g_.op("Max", {g_.op("Round", {g_.op("Mul", {x, one})}), zero}), one});
  return g_.op("Gather", {table, g_.op("Cast", {v}, {Attr::of("to", int64_t(onnx::TensorProto::INT64))})},
               {Attr::of("axis", int64_t(0))});
}

std::string Exporter::weight_t(const std::string& name, const LinearWeights& lw, const SitePlan* sp) {
  const int N = lw.out(), K = lw.in();
  if (!sp || !sp->w.quantized()) {  // FP32, stored transposed [K, N] for MatMul(x, Wᵀ)
    std::vector<float> t(size_t(N) * size_t(K));
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < K; ++k) t[size_t(k) * size_t(N) + size_t(n)] = lw.w.ptr()[size_t(n) * size_t(K) + size_t(k)];
    return g_.floats(name + ".weight_t", {K, N}, t.data());
  }
  std::vector<int16_t> codes(size_t(N) * size_t(K));
  site_weight_codes(lw.w.ptr(), N, K, *sp, codes.data());
  std::vector<int8_t> t(codes.size());
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k) t[size_t(k) * size_t(N) + size_t(n)] = int8_t(codes[size_t(n) * size_t(K) + size_t(k)]);
  return dequantized_weight(name + ".weight_t", t, {K, N}, 1, *sp);
}

std::string Exporter::dequantized_weight(const std::string& name, const std::vector<int8_t>& codes,
                                         const std::vector<int64_t>& dims, int64_t axis, const SitePlan& sp) {
  const int64_t N = dims[size_t(axis)];
  const std::string q = g_.int8s(name + "_codes", dims, codes.data());
  std::string w;
  if (sp.w.per_channel())
    w = g_.op("DequantizeLinear", {q, g_.floats(name + "_step", {N}, sp.w.channel_scales.data()),
                                   g_.zeros(name + "_zero_point", {N}, onnx::TensorProto::INT8)},
              {Attr::of("axis", axis)});
  else
    w = g_.op("DequantizeLinear", {q, g_.scalar(name + "_step", sp.w.scale),
                                   g_.zeros(name + "_zero_point", {}, onnx::TensorProto::INT8)});
  if (sp.weight_offset.empty()) return w;
  // o_c broadcast along the output-channel axis: shape N followed by a 1 per later axis.
  std::vector<int64_t> odims{N};
  odims.resize(dims.size() - size_t(axis), 1);
  return g_.op("Add", {w, g_.floats(name + "_offset", odims, sp.weight_offset.data())});
}

std::string Exporter::linear(SiteId id, const std::string& name, const std::string& x, const LinearWeights& lw) {
  const SitePlan* sp = site(id);
  std::string in = x;
  if (sp) {
    check_operand(id.name(), "input", sp->x);
    check_operand(id.name(), "weight", sp->w);
    if (sp->x.quantized()) in = act(name + ".input", x, sp->x, 0);
  }
  const std::string y = g_.op("MatMul", {in, weight_t(name, lw, sp)});
  std::vector<float> bias(size_t(lw.out()), 0.0f);
  bool has_bias = !lw.b.empty();
  if (has_bias) bias.assign(lw.b.ptr(), lw.b.ptr() + lw.out());
  if (sp && !sp->bias_correction.empty()) {
    if (sp->bias_correction.size() != bias.size())
      fail(ErrorKind::Model, "ONNX export: site ", id.name(), ": bias correction of ", sp->bias_correction.size(),
           " values for ", bias.size(), " outputs");
    for (size_t i = 0; i < bias.size(); ++i) bias[i] += sp->bias_correction[i];
    has_bias = true;
  }
  return has_bias ? g_.op("Add", {y, g_.floats(name + ".bias", {lw.out()}, bias.data())}) : y;
}

std::string Exporter::attention_matmul(SiteId id, const std::string& a, const std::string& b, int64_t cols) {
  const SitePlan* sp = site(id);
  const int heads = m_.cfg.num_heads;
  std::string x = a, w = b;
  const std::string name = id.name();
  if (sp) {
    check_operand(name, "first operand", sp->x);
    check_operand(name, "second operand", sp->w);
    if (sp->x.quantized())
      x = sp->x.per_token ? act_rows_symmetric(a, sp->x, -1) : act(name + ".a", a, sp->x, heads);
    if (sp->w.quantized())
      w = sp->w.per_token ? act_rows_symmetric(b, sp->w, -2) : act(name + ".b", b, sp->w, heads);
  }
  std::string y = g_.op("MatMul", {x, w});
  if (sp && !sp->bias_correction.empty()) {
    if (sp->bias_correction.size() != size_t(heads) * size_t(cols))
      fail(ErrorKind::Model, "ONNX export: site ", name, ": bias correction of ", sp->bias_correction.size(),
           " values, expected heads x ", cols);
    y = g_.op("Add", {y, g_.floats(name + ".bias_correction", {1, heads, 1, cols}, sp->bias_correction.data())});
  }
  return y;
}

std::string Exporter::layernorm(const std::string& name, const std::string& x, const LayerNormWeights& ln) {
  const int64_t D = m_.cfg.embed_dim;
  return g_.op("LayerNormalization",
               {x, g_.floats(name + ".weight", {D}, ln.gamma.ptr()), g_.floats(name + ".bias", {D}, ln.beta.ptr())},
               {Attr::of("axis", int64_t(-1)), Attr::real("epsilon", m_.cfg.ln_eps)});
}

std::string Exporter::patch_embedding() {
  const ViTConfig& c = m_.cfg;
  const int64_t D = c.embed_dim, p = c.patch_size;
  // Patch embedding: Conv with the [D, C·p·p] weight viewed as [D, C, p, p] (c, ky, kx order);
  // quantized: the pixels' QDQ (each patch row is a slice of them) and per-channel codes on axis 0.
  // A per-token input (each patch row its own step) needs the rows: the patches by Reshape /
  // Transpose into [batch, patches, C·p·p], then the site as a linear one.
  g_.set_scope("patch_embed");
  const SitePlan* pe = site({SiteKind::PatchEmbed, -1});
  if (pe) {
    check_operand("patch_embed", "input", pe->x);
    check_operand("patch_embed", "weight", pe->w);
  }
  if (pe && pe->x.per_token) {
    const int64_t G = c.img_size / p;
    const std::string patches = g_.op(
        "Reshape", {g_.op("Transpose", {g_.op("Reshape", {"pixels", g_.int64s("shape.patch_grid", {0, c.in_chans, G, p, G, p})})},
                          {Attr::of("perm", ints({0, 2, 4, 1, 3, 5}))}),
                    g_.int64s("shape.patch_rows", {0, G * G, int64_t(c.in_chans) * p * p})});
    return linear({SiteKind::PatchEmbed, -1}, "patch_embed", patches, m_.patch_embed);
  }
  std::string pix = "pixels", wconv;
  if (pe && pe->x.quantized()) pix = act("patch_embed.input", pix, pe->x, 0);
  if (pe && pe->w.quantized()) {
    const int N = m_.patch_embed.out(), K = m_.patch_embed.in();
    std::vector<int16_t> codes(size_t(N) * size_t(K));
    site_weight_codes(m_.patch_embed.w.ptr(), N, K, *pe, codes.data());
    wconv = dequantized_weight("patch_embed.weight", std::vector<int8_t>(codes.begin(), codes.end()),
                               {D, c.in_chans, p, p}, 0, *pe);
  } else {
    wconv = g_.floats("patch_embed.weight", {D, c.in_chans, p, p}, m_.patch_embed.w.ptr());
  }
  std::vector<float> pbias(m_.patch_embed.b.ptr(), m_.patch_embed.b.ptr() + D);
  if (pe && !pe->bias_correction.empty())
    for (int64_t i = 0; i < D; ++i) pbias[size_t(i)] += pe->bias_correction[size_t(i)];
  const std::string conv = g_.op("Conv", {pix, wconv, g_.floats("patch_embed.bias", {D}, pbias.data())},
                                 {Attr::of("kernel_shape", ints({p, p})), Attr::of("strides", ints({p, p}))});
  return g_.op("Transpose", {g_.op("Reshape", {conv, g_.int64s("shape.tokens_t", {0, D, -1})})},
               {Attr::of("perm", ints({0, 2, 1}))});
}

std::string Exporter::with_class_tokens(const std::string& patches) {
  const ViTConfig& c = m_.cfg;
  const int64_t D = c.embed_dim, T = c.tokens();
  // Class (and distillation) tokens, broadcast over the batch: Expand to [batch, 1, D].
  const std::string batch = g_.op("Shape", {"pixels"}, {Attr::of("start", int64_t(0)), Attr::of("end", int64_t(1))});
  const std::string tok_shape = g_.op("Concat", {batch, g_.int64s("shape.1_D", {1, D})}, {Attr::of("axis", int64_t(0))});
  const std::string cls = g_.op("Expand", {g_.floats("cls_token", {1, 1, D}, m_.cls_token.ptr()), tok_shape});
  std::string x;
  if (c.distilled) {
    const std::string dist = g_.op("Expand", {g_.floats("dist_token", {1, 1, D}, m_.dist_token.ptr()), tok_shape});
    x = g_.op("Concat", {cls, dist, patches}, {Attr::of("axis", int64_t(1))});
  } else {
    x = g_.op("Concat", {cls, patches}, {Attr::of("axis", int64_t(1))});
  }
  return g_.op("Add", {x, g_.floats("pos_embed", {1, T, D}, m_.pos_embed.ptr())});
}

Exporter::BlockConstants Exporter::block_constants() {
  const ViTConfig& c = m_.cfg;
  const int64_t D = c.embed_dim, H = c.num_heads, hd = c.head_dim();
  BlockConstants k;
  // Scalar indices for Gather, which then drops the axis (q, k, v; class and distillation token).
  k.index[0] = g_.int64_scalar("index.0", 0);
  k.index[1] = g_.int64_scalar("index.1", 1);
  k.index[2] = g_.int64_scalar("index.2", 2);
  k.qkv_shape = g_.int64s("shape.qkv", {0, 0, 3, H, hd});
  k.tokens_shape = g_.int64s("shape.tokens", {0, 0, D});
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  k.scale = g_.scalar("attn.scale", scale);
  // The online rotation of fc2's input (ViTModel::mlp_rotation_signs): h·M, M = H_F·diag(s)/√F, as
  // one constant F × F MatMul shared by the blocks.
  if (!m_.mlp_rotation_signs.empty()) {
    const int F = c.mlp_hidden;
    if (m_.mlp_rotation_signs.size() != size_t(F) || !hadamard_supported(F))
      fail(ErrorKind::Model, "ONNX export: MLP rotation of ", m_.mlp_rotation_signs.size(), " signs for mlp_hidden ", F);
    std::vector<float> mr = hadamard_matrix_f32(F);
    const float norm = 1.0f / std::sqrt(static_cast<float>(F));
    for (size_t i = 0; i < size_t(F); ++i)
      for (size_t j = 0; j < size_t(F); ++j) mr[i * size_t(F) + j] *= m_.mlp_rotation_signs[j] * norm;
    k.mlp_rotation = g_.floats("mlp_rotation", {F, F}, mr.data());
    info_.mlp_rotation = true;
  }
  if (plan_ && plan_->softmax_table) {
    // numerics/softmax_table.h: i = min(round((max − s)·k), last), e = hi[i >> 5]·lo[i & 31] — the
    // float products of vitq's kernels, one table entry per index.
    const SoftmaxExpTable t(plan_->softmax_table->bits, plan_->softmax_table->range);
    const int last = (1 << t.bits) - 1;
    std::vector<float> e(size_t(last) + 1);
    for (int i = 0; i <= last; ++i) e[size_t(i)] = t.exp_at(i);
    k.softmax_exp = g_.floats("softmax_table.exp", {int64_t(e.size())}, e.data());
    k.softmax_k = g_.scalar("softmax_table.k", scale * t.inv_step);
    k.softmax_last = g_.scalar("softmax_table.last", float(last));
    k.axes_last = g_.int64s("softmax_table.sum_axes", {-1});
    info_.softmax_table = true;
  }
  k.half = constant("const.half", 0.5f);
  k.one = constant("const.one", 1.0f);
  k.inv_sqrt2 = g_.scalar("gelu.inv_sqrt2", static_cast<float>(1.0 / std::sqrt(2.0)));
  return k;
}

std::string Exporter::block(int l, const std::string& x_in, const BlockConstants& k) {
  const int64_t T = m_.cfg.tokens(), hd = m_.cfg.head_dim();
  const BlockWeights& b = m_.blocks[size_t(l)];
  const std::string pre = "blocks." + std::to_string(l);
  g_.set_scope(pre);
  // QwT compensation (ViTModel: BlockWeights::compensation): x·Wᵀ + b of the block's input,
  // added after fc2's residual.
  const std::string comp = b.has_compensation() ? linear_fp32(pre + ".compensation", x_in, b.compensation) : "";
  info_.compensated_blocks += b.has_compensation() ? 1 : 0;
  std::string h = layernorm(pre + ".norm1", x_in, b.norm1);
  const std::string qkv =
      g_.op("Transpose", {g_.op("Reshape", {linear({SiteKind::Qkv, l}, pre + ".attn.qkv", h, b.qkv), k.qkv_shape})},
            {Attr::of("perm", ints({2, 0, 3, 1, 4}))});  // [3, N, H, T, hd]
  const std::string q = g_.op("Gather", {qkv, k.index[0]}, {Attr::of("axis", int64_t(0))});
  const std::string kk = g_.op("Gather", {qkv, k.index[1]}, {Attr::of("axis", int64_t(0))});
  const std::string v = g_.op("Gather", {qkv, k.index[2]}, {Attr::of("axis", int64_t(0))});
  const std::string kt = g_.op("Transpose", {kk}, {Attr::of("perm", ints({0, 1, 3, 2}))});
  const std::string pr = softmax(attention_matmul({SiteKind::MatmulQK, l}, q, kt, T), k);
  std::string o = g_.op("Transpose", {attention_matmul({SiteKind::MatmulAV, l}, pr, v, hd)},
                        {Attr::of("perm", ints({0, 2, 1, 3}))});
  o = g_.op("Reshape", {o, k.tokens_shape});
  std::string x = g_.op("Add", {x_in, linear({SiteKind::Proj, l}, pre + ".attn.proj", o, b.proj)});
  h = layernorm(pre + ".norm2", x, b.norm2);
  const std::string f = linear({SiteKind::Fc1, l}, pre + ".mlp.fc1", h, b.fc1);
  std::string g = gelu(l, f, k);
  if (!k.mlp_rotation.empty()) g = g_.op("MatMul", {g, k.mlp_rotation});
  x = g_.op("Add", {x, linear({SiteKind::Fc2, l}, pre + ".mlp.fc2", g, b.fc2)});
  if (!comp.empty()) x = g_.op("Add", {x, comp});
  return x;
}

// The sum is ReduceSum's, in its order: the one operation whose rounding may differ from vitq's
// (which adds in 16 fixed lanes); p = e·(1/Σe) as vitq computes it.
std::string Exporter::softmax(const std::string& scores, const BlockConstants& k) {
  if (k.softmax_exp.empty())
    return g_.op("Softmax", {g_.op("Mul", {scores, k.scale})}, {Attr::of("axis", int64_t(-1))});
  const std::string mx = g_.op("ReduceMax", {scores}, {Attr::of("axes", ints({-1})), Attr::of("keepdims", int64_t(1))});
  const std::string i =
      g_.op("Min", {g_.op("Round", {g_.op("Mul", {g_.op("Sub", {mx, scores}), k.softmax_k})}), k.softmax_last});
  const std::string e =
      g_.op("Gather", {k.softmax_exp, g_.op("Cast", {i}, {Attr::of("to", int64_t(onnx::TensorProto::INT64))})},
            {Attr::of("axis", int64_t(0))});
  const std::string sum = g_.op("ReduceSum", {e, k.axes_last}, {Attr::of("keepdims", int64_t(1))});
  return g_.op("Mul", {e, g_.op("Reciprocal", {sum})});
}

// A GELU table (plan.h: GeluTable): c = clip(round(f / Δ), lo, hi) — code_f's operations — and the
// table's entry c − lo (gelu_table_values: the very floats vitq's runtime and simulator use).
std::string Exporter::gelu(int l, const std::string& f, const BlockConstants& k) {
  const std::string site = SiteId{SiteKind::Fc1, l}.name();
  const auto t = plan_ ? plan_->gelu_tables.find(site) : std::map<std::string, GeluTable>::const_iterator{};
  if (!plan_ || t == plan_->gelu_tables.end()) {  // the erf form
    const std::string erf = g_.op("Erf", {g_.op("Mul", {f, k.inv_sqrt2})});
    return g_.op("Mul", {g_.op("Mul", {f, k.half}), g_.op("Add", {erf, k.one})});
  }
  const GeluTable& gt = t->second;
  const std::vector<float> values = gelu_table_values(gt);
  const QRange r = gt.range();
  const std::string table = g_.floats(site + ".gelu_table", {int64_t(values.size())}, values.data());
  const std::string lo = g_.scalar(site + ".gelu_table.lo", float(r.lo));
  const std::string hi = g_.scalar(site + ".gelu_table.hi", float(r.hi));
  const std::string code =
      g_.op("Min", {g_.op("Max", {g_.op("Round", {g_.op("Div", {f, g_.scalar(site + ".gelu_table.step", gt.scale)})}), lo}), hi});
  ++info_.gelu_tables;
  return g_.op("Gather",
               {table, g_.op("Cast", {g_.op("Sub", {code, lo})}, {Attr::of("to", int64_t(onnx::TensorProto::INT64))})},
               {Attr::of("axis", int64_t(0))});
}

void Exporter::head(const std::string& x_in, const BlockConstants& k) {
  const ViTConfig& c = m_.cfg;
  g_.set_scope("head");
  const std::string x = layernorm("norm", x_in, m_.norm);
  std::string logits = linear({SiteKind::Head, -1}, "head",
                              g_.op("Gather", {x, k.index[0]}, {Attr::of("axis", int64_t(1))}), m_.head);
  if (c.distilled) {
    const std::string l2 = linear({SiteKind::HeadDist, -1}, "head_dist",
                                  g_.op("Gather", {x, k.index[1]}, {Attr::of("axis", int64_t(1))}), m_.head_dist);
    logits = g_.op("Mul", {g_.op("Add", {logits, l2}), k.half});
  }
  g_.rename(logits, "logits");
  g_.output("logits", onnx::TensorProto::FLOAT, {"batch", std::to_string(c.num_classes)});
}

void Exporter::build() {
  const ViTConfig& c = m_.cfg;
  const std::string S = std::to_string(c.img_size);
  g_.input("pixels", onnx::TensorProto::FLOAT, {"batch", std::to_string(c.in_chans), S, S});
  std::string x = with_class_tokens(patch_embedding());
  const BlockConstants k = block_constants();
  for (int l = 0; l < int(m_.blocks.size()); ++l) x = block(l, x, k);
  head(x, k);
}

}  // namespace

std::string OnnxExportInfo::summary() const {
  std::string s = cat(qdq_operands, " activation operands as QDQ");
  if (per_token_inputs || level_grid_inputs) {
    s += ", ";
    if (per_token_inputs) s += cat(per_token_inputs, " per-token inputs");
    if (per_token_inputs && level_grid_inputs) s += " and ";
    if (level_grid_inputs) s += cat(level_grid_inputs, " level-grid softmax outputs");
    s += " as float operators";
  }
  if (mlp_rotation) s += ", the MLP rotation";
  if (compensated_blocks) s += cat(", QwT in ", compensated_blocks, " blocks");
  if (gelu_tables) s += cat(", GELU tables in ", gelu_tables, " blocks");
  if (softmax_table) s += ", the softmax exponent table";
  return s;
}

std::string export_onnx(const ViTModel& model, const QuantPlan* plan, OnnxExportInfo* info) {
  onnx::ModelProto mp;
  mp.set_ir_version(8);
  mp.set_producer_name("vitq");
  mp.set_producer_version(VITQ_VERSION);
  onnx::OperatorSetIdProto* opset = mp.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOpset);
  onnx::GraphProto* gp = mp.mutable_graph();
  gp->set_name(model.cfg.architecture.empty() ? "vit" : model.cfg.architecture);
  OnnxExportInfo local;
  Exporter(gp, model, plan, info ? *info : local).build();
  try {
    onnx::checker::check_model(mp);
  } catch (const std::exception& e) {
    fail(ErrorKind::Internal, "ONNX export: the ONNX checker refused the graph vitq built: ", e.what());
  }
  std::string bytes;
  if (!mp.SerializeToString(&bytes))
    fail(ErrorKind::Internal, "ONNX export: the model does not serialize (over protobuf's 2 GB limit?)");
  return bytes;
}

}  // namespace vitq
