#include "runtime/quantized_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/finite.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "model/vit_config.h"
#include "quant/plan_transforms.h"
#include "numerics/quantizer.h"
#include "quant/weight_codes.h"
#include "numerics/pack_bits.h"

namespace vitq {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

CodeStorage code_storage(const std::vector<int>& bits) {
  const int hi = bits.empty() ? 8 : *std::max_element(bits.begin(), bits.end());
  const int lo = bits.empty() ? 8 : *std::min_element(bits.begin(), bits.end());
  if (hi > 8) return CodeStorage::I16;
  if (lo == 8) return CodeStorage::I8;
  return CodeStorage::Packed;
}

const char* code_storage_name(CodeStorage s) {
  switch (s) {
    case CodeStorage::I8: return "I8";
    case CodeStorage::I16: return "I16";
    case CodeStorage::Packed: return "packed";
  }
  return "?";
}

bool linear_has_bias(const ViTConfig& cfg, const SiteId& id) { return id.kind != SiteKind::Qkv || cfg.qkv_bias; }

bool stored_has_bias(const ViTConfig& cfg, const QuantPlan& plan, const SiteId& id) {
  const SitePlan* sp = plan.find(id);
  if (linear_has_bias(cfg, id) || (sp && !sp->bias_correction.empty())) return true;
  // qkv without a bias of its own: the rotation's folded β, or a LayerNorm shift, makes one.
  return (plan.rotation && plan.rotation->residual) || plan.ln_shift.count(id.name());
}

const StoredLinear& QuantizedViT::linear(const SiteId& id) const {
  auto it = linears.find(id);
  if (it == linears.end()) fail(ErrorKind::Internal, "quantized model has no linear site ", id.name());
  return it->second;
}

const std::vector<float>* QuantizedViT::attention_bias_of(const SiteId& id) const {
  auto it = attention_bias.find(id);
  return it == attention_bias.end() ? nullptr : &it->second;
}

void plan_weight_codes(const float* w, int N, int K, const SitePlan& sp, std::vector<int16_t>* codes,
                       std::vector<int>* bits, std::vector<float>* steps) {
  const OperandQuant& q = sp.w;
  bits->resize(size_t(N));
  steps->resize(size_t(N));
  for (int c = 0; c < N; ++c) {
    (*bits)[size_t(c)] = q.channel_bits.empty() ? q.bits : q.channel_bits[size_t(c)];
    (*steps)[size_t(c)] = q.per_channel() ? q.channel_scales[size_t(c)] : q.scale;
  }
  codes->resize(size_t(N) * size_t(K));
  site_weight_codes(w, N, K, sp, codes->data());
}

QuantizedViT quantize_model(const ViTModel& model, const QuantPlan& plan) {
  // A plan with transforms is for the rewritten model: that one is stored.
  std::unique_ptr<ViTModel> rewritten;
  const ViTModel& m = apply_plan_transforms(model, plan, rewritten, "plan");
  QuantizedViT q;
  q.cfg = m.cfg;
  q.plan = plan;
  q.cls_token = m.cls_token;
  q.dist_token = m.dist_token;
  q.pos_embed = m.pos_embed;
  for (const auto& b : m.blocks) {
    q.norm1.push_back(b.norm1);
    q.norm2.push_back(b.norm2);
  }
  q.norm = m.norm;
  q.mlp_rotation_signs = m.mlp_rotation_signs;
  for (const SiteShape& sh : model_sites(m.cfg)) {
    const SitePlan* sp = plan.find(sh.id);
    if (sh.id.is_attention()) {
      if (sp && !sp->bias_correction.empty()) q.attention_bias[sh.id] = sp->bias_correction;
      continue;
    }
    const LinearWeights* lw = site_weights(m, sh.id);
    StoredLinear s;
    s.id = sh.id;
    s.N = lw->out();
    s.K = lw->in();
    s.quantized = sp && sp->w.quantized();
    if (s.quantized) {
      plan_weight_codes(lw->w.ptr(), s.N, s.K, *sp, &s.codes, &s.bits, &s.scale);
      s.per_channel = sp->w.per_channel();
      s.weight_offset = sp->weight_offset;
    } else {
      s.w = lw->w;
    }
    const std::vector<float>* corr = sp ? &sp->bias_correction : nullptr;
    if (stored_has_bias(model.cfg, plan, sh.id)) {
      s.bias.assign(size_t(s.N), 0.0f);
      if (!lw->b.empty()) std::copy(lw->b.data.begin(), lw->b.data.end(), s.bias.begin());
      if (corr && !corr->empty())
        for (size_t i = 0; i < s.bias.size(); ++i) s.bias[i] += (*corr)[i];
    }
    q.linears[sh.id] = std::move(s);
  }
  return q;
}

// ------------------------------------------------------------------------------- writing

namespace {

TensorBlob f32_blob(const std::string& name, const float* p, size_t n, Shape shape) {
  TensorBlob b{name, DType::F32, std::move(shape), {}};
  b.data.resize(n * 4);
  if (n) std::memcpy(b.data.data(), p, n * 4);
  return b;
}

TensorBlob codes_blob(const StoredLinear& s, CodeStorage st) {
  const std::string name = s.id.name() + ".qweight";
  const size_t n = s.codes.size();
  switch (st) {
    case CodeStorage::I8: {
      TensorBlob b{name, DType::I8, {s.N, s.K}, std::vector<uint8_t>(n)};
      for (size_t i = 0; i < n; ++i) b.data[i] = uint8_t(int8_t(s.codes[i]));
      return b;
    }
    case CodeStorage::I16: {
      TensorBlob b{name, DType::I16, {s.N, s.K}, std::vector<uint8_t>(2 * n)};
      for (size_t i = 0; i < n; ++i) {
        const uint16_t u = uint16_t(s.codes[i]);
        b.data[2 * i] = uint8_t(u & 0xff);
        b.data[2 * i + 1] = uint8_t(u >> 8);
      }
      return b;
    }
    case CodeStorage::Packed: {
      uint64_t total = 0;
      for (int bb : s.bits) total += uint64_t(bb) * uint64_t(s.K);
      const size_t bytes = packed_bytes_for_bits(total);
      TensorBlob b{name, DType::U8, {int64_t(bytes)}, std::vector<uint8_t>(bytes, 0)};
      std::vector<int32_t> row(size_t(s.K));
      uint64_t off = 0;
      for (int c = 0; c < s.N; ++c) {
        for (int k = 0; k < s.K; ++k) row[size_t(k)] = s.codes[size_t(c) * size_t(s.K) + size_t(k)];
        off = pack_codes(row.data(), row.size(), s.bits[size_t(c)], b.data.data(), off);
      }
      return b;
    }
  }
  return {};
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  if (!f) fail(ErrorKind::Io, path, ": cannot write");
  f << text;
  if (!f) fail(ErrorKind::Io, path, ": write failed");
}

}  // namespace

WrittenModel write_quantized_model(const QuantizedViT& q, const std::string& src_dir, const std::string& out_dir) {
  const ViTConfig& c = q.cfg;
  const int D = c.embed_dim, T = c.tokens();
  fs::create_directories(out_dir);
  WrittenModel out;
  std::vector<TensorBlob> blobs;
  blobs.push_back(f32_blob("cls_token", q.cls_token.ptr(), size_t(D), {1, 1, D}));
  if (c.distilled) blobs.push_back(f32_blob("dist_token", q.dist_token.ptr(), size_t(D), {1, 1, D}));
  blobs.push_back(f32_blob("pos_embed", q.pos_embed.ptr(), size_t(T) * size_t(D), {1, T, D}));
  for (int i = 0; i < c.depth; ++i) {
    const std::string p = cat("blocks.", i, ".");
    const LayerNormWeights& n1 = q.norm1[size_t(i)];
    const LayerNormWeights& n2 = q.norm2[size_t(i)];
    blobs.push_back(f32_blob(p + "norm1.weight", n1.gamma.ptr(), size_t(D), {D}));
    blobs.push_back(f32_blob(p + "norm1.bias", n1.beta.ptr(), size_t(D), {D}));
    blobs.push_back(f32_blob(p + "norm2.weight", n2.gamma.ptr(), size_t(D), {D}));
    blobs.push_back(f32_blob(p + "norm2.bias", n2.beta.ptr(), size_t(D), {D}));
  }
  if (!q.mlp_rotation_signs.empty())
    blobs.push_back(f32_blob("mlp_rotation.signs", q.mlp_rotation_signs.data(), q.mlp_rotation_signs.size(),
                             {int64_t(q.mlp_rotation_signs.size())}));
  blobs.push_back(f32_blob("norm.weight", q.norm.gamma.ptr(), size_t(D), {D}));
  blobs.push_back(f32_blob("norm.bias", q.norm.beta.ptr(), size_t(D), {D}));
  for (const auto& [id, s] : q.linears) {
    const std::string n = id.name();
    if (s.quantized) {
      const CodeStorage st = code_storage(s.bits);
      blobs.push_back(codes_blob(s, st));
      ++out.sites_by_storage[code_storage_name(st)];
      if (s.per_channel) blobs.push_back(f32_blob(n + ".weight_scale", s.scale.data(), s.scale.size(), {s.N}));
      else blobs.push_back(f32_blob(n + ".weight_scale", s.scale.data(), 1, {1}));
      if (!s.weight_offset.empty())
        blobs.push_back(f32_blob(n + ".weight_offset", s.weight_offset.data(), s.weight_offset.size(), {s.N}));
    } else {
      blobs.push_back(f32_blob(n + ".weight", s.w.ptr(), size_t(s.w.numel()), {s.N, s.K}));
      ++out.sites_by_storage["F32"];
    }
    if (!s.bias.empty()) blobs.push_back(f32_blob(n + ".bias", s.bias.data(), s.bias.size(), {s.N}));
  }
  for (const auto& [id, corr] : q.attention_bias) {
    const int64_t H = c.num_heads, N = int64_t(corr.size()) / H;
    blobs.push_back(f32_blob(id.name() + ".bias", corr.data(), corr.size(), {H, N}));
  }
  out.path = (fs::path(out_dir) / "model.safetensors").string();
  write_safetensors(out.path, blobs,
                    {{"format", kQuantizedFormat}, {"format_version", std::to_string(kQuantizedFormatVersion)}});
  out.bytes = fs::file_size(out.path);

  // config.json: the source's, plus the vitq section. HF checkpoints keep their preprocessor file.
  ojson cfg = read_json_file((fs::path(src_dir) / "config.json").string());
  if (!cfg.is_object()) fail(ErrorKind::Model, src_dir, "/config.json: not a JSON object");
  ojson v;
  v["format"] = kQuantizedFormat;
  v["format_version"] = kQuantizedFormatVersion;
  v["tool_version"] = VITQ_VERSION;
  v["weights"] = "model.safetensors";
  v["plan"] = "plan.json";
  v["method"] = q.plan.method;
  v["source_model"] = fs::absolute(src_dir).lexically_normal().string();
  v["tensor_layout"] = "vitq (docs/FORMAT.md): timm names, linear weights [out, in]";
  cfg["vitq"] = v;
  write_text((fs::path(out_dir) / "config.json").string(), cfg.dump(2) + "\n");
  const fs::path pre = fs::path(src_dir) / "preprocessor_config.json";
  if (fs::exists(pre)) fs::copy_file(pre, fs::path(out_dir) / "preprocessor_config.json", fs::copy_options::overwrite_existing);
  save_plan(q.plan, (fs::path(out_dir) / "plan.json").string());
  return out;
}

// ------------------------------------------------------------------------------- loading

bool is_quantized_model_dir(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_regular_file(fs::path(dir) / "config.json", ec)) return false;  // the checkpoint loader reports it
  std::ifstream f(fs::path(dir) / "config.json");
  if (!f) return false;
  const ojson j = ojson::parse(f, nullptr, /*allow_exceptions=*/false);
  return j.is_object() && j.contains("vitq");
}

namespace {

class Loader {
 public:
  Loader(const SafeTensorsFile& f, bool allow_non_finite) : f_(f), allow_non_finite_(allow_non_finite) {}

  [[noreturn]] void bad(const std::string& name, const std::string& why) const {
    fail(ErrorKind::Model, f_.path(), ": tensor '", name, "': ", why);
  }

  const TensorInfo& expect(const std::string& name, DType dt, const Shape& shape) {
    if (!f_.has(name)) bad(name, cat("is missing (expected ", dtype_name(dt), " ", shape_str(shape), ")"));
    used_.insert(name);
    const TensorInfo& ti = f_.info(name);
    if (ti.dtype != dt || ti.shape != shape)
      bad(name, cat("is ", dtype_name(ti.dtype), " ", shape_str(ti.shape), ", expected ", dtype_name(dt), " ",
                    shape_str(shape)));
    return ti;
  }

  std::vector<float> f32(const std::string& name, const Shape& shape) {
    Tensor t = f32_tensor(name, shape, shape);
    return std::vector<float>(t.data.begin(), t.data.end());
  }
  Tensor f32_tensor(const std::string& name, const Shape& stored, const Shape& as) {
    expect(name, DType::F32, stored);
    Tensor t = f_.to_f32(name);
    t.shape = as;
    if (!allow_non_finite_) check_finite_tensor(f_.path(), name, t.ptr(), size_t(t.numel()));
    return t;
  }

  void check_all_used() const {
    const std::string list = f_.list_unused(used_);
    if (list.empty()) return;
    fail(ErrorKind::Model, f_.path(), ": unexpected tensors not described by plan.json and config.json: ", list);
  }

  const SafeTensorsFile& file() const { return f_; }

 private:
  const SafeTensorsFile& f_;
  bool allow_non_finite_ = false;
  std::set<std::string> used_;
};

void load_codes(Loader& L, StoredLinear& s) {
  const std::string name = s.id.name() + ".qweight";
  const CodeStorage st = code_storage(s.bits);
  const size_t n = size_t(s.N) * size_t(s.K);
  s.codes.resize(n);
  if (st == CodeStorage::Packed) {
    uint64_t total = 0;
    for (int b : s.bits) total += uint64_t(b) * uint64_t(s.K);
    const size_t bytes = packed_bytes_for_bits(total);
    if (!L.file().has(name))
      L.bad(name, cat("is missing (expected U8 [", bytes, "]: packed codes of ", total, " bits)"));
    const TensorInfo& ti = L.file().info(name);
    if (ti.dtype != DType::U8 || ti.shape.size() != 1)
      L.bad(name, cat("is ", dtype_name(ti.dtype), " ", shape_str(ti.shape), ", expected U8 [", bytes,
                      "] (packed codes; channel bits ", *std::min_element(s.bits.begin(), s.bits.end()), "..",
                      *std::max_element(s.bits.begin(), s.bits.end()), ")"));
    if (ti.shape[0] != int64_t(bytes))
      L.bad(name, cat("holds ", ti.shape[0], " bytes, but ", s.N, " x ", s.K, " codes at the plan's bit-widths need ",
                      bytes, " (", total, " bits)"));
    L.expect(name, DType::U8, {int64_t(bytes)});
    std::span<const uint8_t> b = L.file().bytes(name);
    if (total % 8 && (b[bytes - 1] >> (total % 8)) != 0)
      L.bad(name, "the unused high bits of the last byte are not zero (corrupt or mis-sized stream)");
    std::vector<int32_t> row(size_t(s.K));
    uint64_t off = 0;
    for (int c = 0; c < s.N; ++c) {
      off = unpack_codes(b.data(), row.size(), s.bits[size_t(c)], row.data(), off);
      for (int k = 0; k < s.K; ++k) s.codes[size_t(c) * size_t(s.K) + size_t(k)] = int16_t(row[size_t(k)]);
    }
    return;
  }
  const bool i8 = st == CodeStorage::I8;
  L.expect(name, i8 ? DType::I8 : DType::I16, {s.N, s.K});
  std::span<const uint8_t> b = L.file().bytes(name);
  for (int c = 0; c < s.N; ++c) {
    const QRange r = qrange(s.bits[size_t(c)]);
    for (int k = 0; k < s.K; ++k) {
      const size_t i = size_t(c) * size_t(s.K) + size_t(k);
      const int v = i8 ? int(int8_t(b[i])) : int(int16_t(uint16_t(b[2 * i]) | uint16_t(uint16_t(b[2 * i + 1]) << 8)));
      if (v < r.lo || v > r.hi)
        L.bad(name, cat("code ", v, " at [", c, ", ", k, "] is outside channel ", c, "'s ", s.bits[size_t(c)],
                        "-bit grid [", r.lo, ", ", r.hi, "]"));
      s.codes[i] = int16_t(v);
    }
  }
}

// config.json's vitq section: a newer format must say so, not fail on a tensor.
void check_config_format(const std::string& cfg_path) {
  const ojson cj = read_json_file(cfg_path);
  if (!cj.is_object() || !cj.contains("vitq") || !cj["vitq"].is_object())
    fail(ErrorKind::Model, cfg_path, ": no \"vitq\" section: not a quantized model directory");
  const ojson& v = cj["vitq"];
  if (!v.contains("format") || !v["format"].is_string() || v["format"] != kQuantizedFormat)
    fail(ErrorKind::Model, cfg_path, ": vitq.format must be \"", kQuantizedFormat, "\"");
  if (!v.contains("format_version") || !v["format_version"].is_number_integer())
    fail(ErrorKind::Model, cfg_path, ": vitq.format_version is missing or not an integer");
  if (v["format_version"].get<int64_t>() != kQuantizedFormatVersion)
    fail(ErrorKind::Model, cfg_path, ": vitq.format_version is ", v["format_version"].dump(), "; this vitq reads version ",
         kQuantizedFormatVersion, " (re-create the directory with 'vitq quantize' or 'vitq export')");
}

// model.safetensors' __metadata__: the format and its version.
void check_tensor_file_format(const SafeTensorsFile& f, const std::string& st_path) {
  const auto& meta = f.metadata();
  auto mi = meta.find("format");
  if (mi == meta.end() || mi->second != kQuantizedFormat)
    fail(ErrorKind::Model, st_path, ": __metadata__.format must be \"", kQuantizedFormat,
         "\" (an FP32 checkpoint? use it with --model directly)");
  mi = meta.find("format_version");
  if (mi == meta.end() || mi->second != std::to_string(kQuantizedFormatVersion))
    fail(ErrorKind::Model, st_path, ": __metadata__.format_version is ",
         mi == meta.end() ? std::string("missing") : "\"" + mi->second + "\"", "; this vitq reads version ",
         kQuantizedFormatVersion);
}

// The float tensors outside the linear sites: tokens, position embedding, LayerNorms, MLP rotation.
void load_float_parts(Loader& L, QuantizedViT& q) {
  const ViTConfig& c = q.cfg;
  const int D = c.embed_dim, T = c.tokens();
  q.cls_token = L.f32_tensor("cls_token", {1, 1, D}, {D});
  if (c.distilled) q.dist_token = L.f32_tensor("dist_token", {1, 1, D}, {D});
  q.pos_embed = L.f32_tensor("pos_embed", {1, T, D}, {T, D});
  for (int i = 0; i < c.depth; ++i) {
    const std::string p = cat("blocks.", i, ".");
    q.norm1.push_back({L.f32_tensor(p + "norm1.weight", {D}, {D}), L.f32_tensor(p + "norm1.bias", {D}, {D})});
    q.norm2.push_back({L.f32_tensor(p + "norm2.weight", {D}, {D}), L.f32_tensor(p + "norm2.bias", {D}, {D})});
  }
  q.norm = {L.f32_tensor("norm.weight", {D}, {D}), L.f32_tensor("norm.bias", {D}, {D})};
  if (q.plan.rotation && q.plan.rotation->mlp) {
    q.mlp_rotation_signs = L.f32("mlp_rotation.signs", {c.mlp_hidden});
    for (size_t i = 0; i < q.mlp_rotation_signs.size(); ++i)
      if (std::fabs(q.mlp_rotation_signs[i]) != 1.0f)
        L.bad("mlp_rotation.signs", cat("entry ", i, " is ", q.mlp_rotation_signs[i], "; signs must be +1 or -1"));
  }
}

// A quantized linear site's codes, steps and offsets, each checked against the plan.
void load_quantized_weights(Loader& L, const SitePlan& sp, StoredLinear& s) {
  const std::string n = s.id.name();
  s.per_channel = sp.w.per_channel();
  s.bits.resize(size_t(s.N));
  for (int ch = 0; ch < s.N; ++ch)
    s.bits[size_t(ch)] = sp.w.channel_bits.empty() ? sp.w.bits : sp.w.channel_bits[size_t(ch)];
  load_codes(L, s);
  if (sp.has_weight_codes() && !std::equal(s.codes.begin(), s.codes.end(), sp.weight_codes.begin()))
    L.bad(n + ".qweight", "differs from the weight codes of plan.json");
  const std::string sn = n + ".weight_scale";
  std::vector<float> sc = L.f32(sn, {s.per_channel ? s.N : 1});
  for (size_t i = 0; i < sc.size(); ++i) {
    if (!(sc[i] > 0) || !std::isfinite(sc[i]))
      L.bad(sn, cat("step [", i, "] is ", sc[i], "; steps must be positive and finite"));
    const float want = s.per_channel ? sp.w.channel_scales[i] : sp.w.scale;
    if (sc[i] != want)
      L.bad(sn, cat("step [", i, "] is ", sc[i], " but plan.json says ", want, " (file and plan disagree)"));
  }
  s.scale.assign(size_t(s.N), sc[0]);
  if (s.per_channel) s.scale = sc;
  if (!sp.weight_offset.empty()) {
    s.weight_offset = L.f32(n + ".weight_offset", {s.N});
    if (s.weight_offset != sp.weight_offset) L.bad(n + ".weight_offset", "differs from plan.json");
  }
}

// Every site's tensors: attention sites' bias corrections, linear sites' weights (codes or FP32) and biases.
void load_sites(Loader& L, QuantizedViT& q) {
  const ViTConfig& c = q.cfg;
  for (const SiteShape& sh : model_sites(c)) {
    const std::string n = sh.id.name();
    const SitePlan* sp = q.plan.find(sh.id);
    if (sh.id.is_attention()) {
      if (sp && !sp->bias_correction.empty()) {
        std::vector<float> b = L.f32(n + ".bias", {c.num_heads, sh.N});
        if (b != sp->bias_correction) L.bad(n + ".bias", "differs from the bias_correction of plan.json");
        q.attention_bias[sh.id] = std::move(b);
      }
      continue;
    }
    StoredLinear s;
    s.id = sh.id;
    s.N = sh.N;
    s.K = sh.K;
    s.quantized = sp && sp->w.quantized();
    if (s.quantized) load_quantized_weights(L, *sp, s);
    else s.w = L.f32_tensor(n + ".weight", {s.N, s.K}, {s.N, s.K});
    if (stored_has_bias(c, q.plan, sh.id)) s.bias = L.f32(n + ".bias", {s.N});
    q.linears[sh.id] = std::move(s);
  }
}

}  // namespace

QuantizedViT load_quantized_model(const std::string& dir, const LoadOptions& opt) {
  QuantizedViT q;
  q.dir = dir;
  const std::string cfg_path = (fs::path(dir) / "config.json").string();
  const std::string plan_path = (fs::path(dir) / "plan.json").string();
  const std::string st_path = (fs::path(dir) / "model.safetensors").string();
  check_config_format(cfg_path);
  q.cfg = load_vit_config(dir);
  q.plan = load_plan(plan_path);
  check_plan_matches(q.plan, q.cfg, plan_path);

  SafeTensorsFile f = SafeTensorsFile::open(st_path);
  check_tensor_file_format(f, st_path);
  Loader L(f, opt.allow_non_finite);
  load_float_parts(L, q);
  load_sites(L, q);
  L.check_all_used();
  return q;
}

ViTModel dequantized_model(const QuantizedViT& q) {
  ViTModel m;
  m.cfg = q.cfg;
  m.cls_token = q.cls_token;
  m.dist_token = q.dist_token;
  m.pos_embed = q.pos_embed;
  m.norm = q.norm;
  m.mlp_rotation_signs = q.mlp_rotation_signs;
  m.blocks.resize(size_t(q.cfg.depth));
  for (size_t i = 0; i < m.blocks.size(); ++i) {
    m.blocks[i].norm1 = q.norm1[i];
    m.blocks[i].norm2 = q.norm2[i];
  }
  set_model_compensation(m, q.plan);  // simulation_plan drops it from the plan: the model has it
  for (const auto& [id, s] : q.linears) {
    LinearWeights* lw = const_cast<LinearWeights*>(site_weights(m, id));
    if (!lw) fail(ErrorKind::Internal, "no layer for site ", id.name());
    lw->w = Tensor({s.N, s.K});
    if (s.quantized) {
      for (int c = 0; c < s.N; ++c)
        for (int k = 0; k < s.K; ++k) {
          const size_t i = size_t(c) * size_t(s.K) + size_t(k);
          lw->w.data[i] = float(s.codes[i]) * s.scale[size_t(c)];
        }
    } else {
      lw->w = s.w;
    }
    lw->b = Tensor();
    if (!s.bias.empty()) {
      lw->b = Tensor({s.N});
      std::copy(s.bias.begin(), s.bias.end(), lw->b.data.begin());
    } else if (id.kind != SiteKind::Qkv) {
      lw->b = Tensor({s.N});  // the forward reads a bias for every layer but qkv
    }
  }
  return m;
}

void drop_linear_weights(QuantizedViT& q) {
  for (auto& [id, s] : q.linears) {
    std::vector<int16_t>().swap(s.codes);
    s.w = Tensor();
  }
}

QuantPlan simulation_plan(const QuantizedViT& q) {
  QuantPlan p = q.plan;
  drop_plan_transforms(p);  // the stored LayerNorms and weights are the rewritten ones
  for (auto& [name, sp] : p.sites) {
    SiteId id;
    if (parse_site_name(name, &id) && !id.is_attention()) sp.bias_correction.clear();
  }
  return p;
}

}  // namespace vitq
