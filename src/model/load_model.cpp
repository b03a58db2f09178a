// Maps checkpoint tensor names (timm or Hugging Face) onto ViTModel and checks every shape.
#include <set>

#include "core/error.h"
#include "core/finite.h"
#include "io/safetensors.h"
#include "model/vit_model.h"

namespace vitq {
namespace {

class Reader {
 public:
  Reader(const SafeTensorsFile& f, bool allow_non_finite) : f_(f), allow_non_finite_(allow_non_finite) {}

  Tensor get(const std::string& name, const Shape& shape) {
    if (!f_.has(name))
      fail(ErrorKind::Model, f_.path(), ": tensor '", name, "' is missing (expected shape ", shape_str(shape), ")");
    used_.insert(name);
    Tensor t = f_.to_f32(name, shape);
    if (!allow_non_finite_) check_finite_tensor(f_.path(), name, t.ptr(), size_t(t.numel()));
    return t;
  }
  // Reads a tensor whose stored shape may differ from `shape` only by how it is split into
  // dimensions (e.g. conv [D, C, p, p] read as [D, C*p*p]).
  Tensor get_reshaped(const std::string& name, const Shape& stored, const Shape& shape) {
    Tensor t = get(name, stored);
    t.shape = shape;
    return t;
  }
  bool has(const std::string& name) const { return f_.has(name); }

  void check_all_used() const {
    const std::string list = f_.list_unused(used_);
    if (list.empty()) return;
    fail(ErrorKind::Model, f_.path(), ": tensors not used by the configured architecture: ", list,
         " — the checkpoint does not match config.json");
  }
  void mark_ignored(const std::string& name) { used_.insert(name); }

 private:
  const SafeTensorsFile& f_;
  bool allow_non_finite_ = false;
  std::set<std::string> used_;
};

LinearWeights linear(Reader& r, const std::string& w, const std::string& b, int out, int in, bool bias = true) {
  LinearWeights l;
  l.w = r.get(w, {out, in});
  if (bias) l.b = r.get(b, {out});
  return l;
}

LayerNormWeights layernorm(Reader& r, const std::string& g, const std::string& b, int dim) {
  return {r.get(g, {dim}), r.get(b, {dim})};
}

void load_timm(Reader& r, ViTModel& m) {
  const ViTConfig& c = m.cfg;
  const int D = c.embed_dim, P = c.patch_size;
  m.patch_embed.w = r.get_reshaped("patch_embed.proj.weight", {D, c.in_chans, P, P}, {D, c.patch_dim()});
  m.patch_embed.b = r.get("patch_embed.proj.bias", {D});
  m.cls_token = r.get_reshaped("cls_token", {1, 1, D}, {D});
  if (c.distilled) m.dist_token = r.get_reshaped("dist_token", {1, 1, D}, {D});
  m.pos_embed = r.get_reshaped("pos_embed", {1, c.tokens(), D}, {c.tokens(), D});
  for (int i = 0; i < c.depth; ++i) {
    std::string p = cat("blocks.", i, ".");
    BlockWeights& b = m.blocks[static_cast<size_t>(i)];
    b.norm1 = layernorm(r, p + "norm1.weight", p + "norm1.bias", D);
    b.qkv = linear(r, p + "attn.qkv.weight", p + "attn.qkv.bias", 3 * D, D, c.qkv_bias);
    b.proj = linear(r, p + "attn.proj.weight", p + "attn.proj.bias", D, D);
    b.norm2 = layernorm(r, p + "norm2.weight", p + "norm2.bias", D);
    b.fc1 = linear(r, p + "mlp.fc1.weight", p + "mlp.fc1.bias", c.mlp_hidden, D);
    b.fc2 = linear(r, p + "mlp.fc2.weight", p + "mlp.fc2.bias", D, c.mlp_hidden);
  }
  m.norm = layernorm(r, "norm.weight", "norm.bias", D);
  m.head = linear(r, "head.weight", "head.bias", c.num_classes, D);
  if (c.distilled) m.head_dist = linear(r, "head_dist.weight", "head_dist.bias", c.num_classes, D);
}

// Concatenates HF's separate query/key/value projections into timm's fused qkv.
LinearWeights hf_qkv(Reader& r, const std::string& p, int D, bool bias) {
  LinearWeights q = linear(r, p + "query.weight", p + "query.bias", D, D, bias);
  LinearWeights k = linear(r, p + "key.weight", p + "key.bias", D, D, bias);
  LinearWeights v = linear(r, p + "value.weight", p + "value.bias", D, D, bias);
  LinearWeights out;
  out.w = Tensor({3 * D, D});
  size_t n = size_t(D) * D;
  std::copy(q.w.data.begin(), q.w.data.end(), out.w.data.begin());
  std::copy(k.w.data.begin(), k.w.data.end(), out.w.data.begin() + long(n));
  std::copy(v.w.data.begin(), v.w.data.end(), out.w.data.begin() + long(2 * n));
  if (bias) {
    out.b = Tensor({3 * D});
    std::copy(q.b.data.begin(), q.b.data.end(), out.b.data.begin());
    std::copy(k.b.data.begin(), k.b.data.end(), out.b.data.begin() + D);
    std::copy(v.b.data.begin(), v.b.data.end(), out.b.data.begin() + 2 * D);
  }
  return out;
}

void load_hf(Reader& r, ViTModel& m) {
  const ViTConfig& c = m.cfg;
  const int D = c.embed_dim, P = c.patch_size;
  const std::string e = "vit.embeddings.";
  m.patch_embed.w =
      r.get_reshaped(e + "patch_embeddings.projection.weight", {D, c.in_chans, P, P}, {D, c.patch_dim()});
  m.patch_embed.b = r.get(e + "patch_embeddings.projection.bias", {D});
  m.cls_token = r.get_reshaped(e + "cls_token", {1, 1, D}, {D});
  m.pos_embed = r.get_reshaped(e + "position_embeddings", {1, c.tokens(), D}, {c.tokens(), D});
  for (int i = 0; i < c.depth; ++i) {
    std::string p = cat("vit.encoder.layer.", i, ".");
    BlockWeights& b = m.blocks[static_cast<size_t>(i)];
    b.norm1 = layernorm(r, p + "layernorm_before.weight", p + "layernorm_before.bias", D);
    b.qkv = hf_qkv(r, p + "attention.attention.", D, c.qkv_bias);
    b.proj = linear(r, p + "attention.output.dense.weight", p + "attention.output.dense.bias", D, D);
    b.norm2 = layernorm(r, p + "layernorm_after.weight", p + "layernorm_after.bias", D);
    b.fc1 = linear(r, p + "intermediate.dense.weight", p + "intermediate.dense.bias", c.mlp_hidden, D);
    b.fc2 = linear(r, p + "output.dense.weight", p + "output.dense.bias", D, c.mlp_hidden);
  }
  m.norm = layernorm(r, "vit.layernorm.weight", "vit.layernorm.bias", D);
  m.head = linear(r, "classifier.weight", "classifier.bias", c.num_classes, D);
  // ViTModel's pooler is not used by ViTForImageClassification.
  for (const char* n : {"vit.pooler.dense.weight", "vit.pooler.dense.bias"})
    if (r.has(n)) r.mark_ignored(n);
}

}  // namespace

int64_t ViTModel::parameter_count() const {
  int64_t n = patch_embed.w.numel() + patch_embed.b.numel() + cls_token.numel() + dist_token.numel() +
              pos_embed.numel() + norm.gamma.numel() + norm.beta.numel() + head.w.numel() + head.b.numel() +
              head_dist.w.numel() + head_dist.b.numel();
  for (const auto& b : blocks)
    for (const Tensor* t : {&b.norm1.gamma, &b.norm1.beta, &b.norm2.gamma, &b.norm2.beta, &b.qkv.w, &b.qkv.b,
                            &b.proj.w, &b.proj.b, &b.fc1.w, &b.fc1.b, &b.fc2.w, &b.fc2.b})
      n += t->numel();
  return n;
}

ViTModel load_vit_model(const std::string& dir, const LoadOptions& opt) {
  ViTModel m;
  m.cfg = load_vit_config(dir);
  m.blocks.resize(static_cast<size_t>(m.cfg.depth));
  SafeTensorsFile f = SafeTensorsFile::open(dir + "/model.safetensors");
  Reader r(f, opt.allow_non_finite);
  if (m.cfg.layout == CheckpointLayout::Timm) load_timm(r, m);
  else load_hf(r, m);
  r.check_all_used();
  return m;
}

}  // namespace vitq
