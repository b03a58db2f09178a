#include "quant/plan.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "quant/target.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "model/vit_config.h"
#include "quant/calib_data.h"
#include "numerics/level_grid.h"
#include "numerics/quantizer.h"

namespace vitq {

using ojson = nlohmann::ordered_json;
using json = nlohmann::ordered_json;  // keeps the key order of settings on a round trip

const SitePlan* QuantPlan::find(const SiteId& id) const {
  auto it = sites.find(id.name());
  return it == sites.end() ? nullptr : &it->second;
}

bool QuantPlan::operator==(const QuantPlan& o) const {
  return method == o.method && settings == o.settings && calibration == o.calibration &&
         tool_version == o.tool_version && architecture == o.architecture && sites == o.sites &&
         ln_smoothing == o.ln_smoothing && ln_shift == o.ln_shift && rotation == o.rotation &&
         compensation == o.compensation && target == o.target && gelu_tables == o.gelu_tables &&
         softmax_table == o.softmax_table;
}

namespace {

ojson operand_to_json(const OperandQuant& q) {
  ojson j;
  j["bits"] = q.bits;
  if (!q.quantized()) return j;
  // The signed grid is the default; "unsigned": true is the format-1 spelling of that grid.
  if (q.grid == Grid::Unsigned) j["unsigned"] = true;
  if (is_level_grid(q.grid)) j["grid"] = grid_name(q.grid);  // its step is fixed (2^-15)
  if (q.per_token) j["granularity"] = "token";                // no stored step
  if (q.clips_tokens()) j["token_clip"] = q.token_clip;
  if (q.groups_tokens()) j["token_group"] = q.token_group;
  if (!q.per_token && !is_level_grid(q.grid)) j["scale"] = q.scale;
  if (q.per_channel()) j["channel_scales"] = q.channel_scales;
  if (!q.channel_bits.empty()) j["channel_bits"] = q.channel_bits;
  if (q.per_head()) j["head_scales"] = q.head_scales;
  return j;
}

std::string hex64(uint64_t h) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

// FNV-1a 64 over the codes of every site that has them, in site-name order: name, NUL, count
// (8 bytes LE), codes (2 bytes LE each). Independent of the companion file's layout.
std::string codes_hash(const QuantPlan& p) {
  uint64_t h = fnv1a64(nullptr, 0);
  for (const auto& [name, s] : p.sites) {
    if (!s.has_weight_codes()) continue;
    h = fnv1a64(name.data(), name.size() + 1, h);  // includes the terminating NUL
    const uint64_t n = s.weight_codes.size();
    h = fnv1a64(&n, sizeof n, h);
    h = fnv1a64(s.weight_codes.data(), s.weight_codes.size() * sizeof(int16_t), h);
  }
  return hex64(h);
}

bool any_codes(const QuantPlan& p) {
  for (const auto& kv : p.sites)
    if (kv.second.has_weight_codes()) return true;
  return false;
}

struct Ctx {
  const std::string& source;
  std::string where;
  [[noreturn]] void bad(const std::string& field, const std::string& why) const {
    fail(ErrorKind::Model, source, ": ", where, field, ": ", why);
  }
};

// The path of a companion file named in the plan JSON (`field`): a plain file name next to the plan.
std::string companion_path(const std::string& file, const Ctx& c, const std::string& field) {
  if (file.empty() || file.find('/') != std::string::npos || file.find('\\') != std::string::npos)
    c.bad(field, "must be a plain file name next to the plan");
  return (std::filesystem::path(c.source).parent_path() / file).string();
}

// Every number is checked in the type it is used in: a value that is finite as a double but
// not as a float (1e39), or a step that is positive as a double but 0 or subnormal as a float
// (1e-50), is an error, never a silent inf or 0.
float finite_float(const Ctx& c, const std::string& field, const json& v) {
  if (!v.is_number()) c.bad(field, cat("must be a number (got ", v.dump(), ")"));
  const double d = v.get<double>();
  if (!std::isfinite(d) || std::fabs(d) > double(FLT_MAX))
    c.bad(field, cat("must be a finite number representable as float32 (got ", v.dump(), ")"));
  return float(d);
}

std::vector<float> float_array(const Ctx& c, const std::string& field, const nlohmann::ordered_json& a) {
  if (!a.is_array()) c.bad(field, "must be an array");
  std::vector<float> v;
  for (size_t i = 0; i < a.size(); ++i) v.push_back(finite_float(c, cat(field, "[", i, "]"), a[i]));
  return v;
}

float positive_scale(const Ctx& c, const std::string& field, const json& v) {
  if (!v.is_number()) c.bad(field, cat("must be a number (got ", v.dump(), ")"));
  const double d = v.get<double>();
  if (!(d >= double(FLT_MIN)) || !(d <= double(FLT_MAX)))
    c.bad(field, cat("must be a positive step that is a normal float32, in [", FLT_MIN, ", ", FLT_MAX, "] (got ",
                     v.dump(), ")"));
  return float(d);
}

int bits_of(const Ctx& c, const std::string& field, const json& v, bool allow_zero) {
  if (!v.is_number_integer()) c.bad(field, cat("must be an integer (got ", v.dump(), ")"));
  int b = -1;
  if (json_int_in(v, 0, kMaxBits, &b) && ((b == 0 && allow_zero) || b >= kMinBits)) return b;
  c.bad(field, cat("must be ", allow_zero ? "0 (FP32) or " : "", "in [", kMinBits, ", ", kMaxBits, "] (got ", v.dump(),
                   ")"));
}

std::vector<float> scale_array(const Ctx& c, const std::string& field, const json& a) {
  if (!a.is_array() || a.empty()) c.bad(field, "must be a non-empty array");
  std::vector<float> v;
  for (size_t i = 0; i < a.size(); ++i) v.push_back(positive_scale(c, cat(field, "[", i, "]"), a[i]));
  return v;
}

Grid grid_of(const Ctx& c, const std::string& name, const json& j) {
  Grid g = Grid::Signed;
  if (j.contains("unsigned")) {
    if (!j["unsigned"].is_boolean()) c.bad(name + ".unsigned", "must be true or false");
    if (j["unsigned"].get<bool>()) g = Grid::Unsigned;
  }
  if (j.contains("grid")) {
    const json& v = j["grid"];
    if (!v.is_string() || (v != "log2" && v != "logsqrt2" && v != "float" && v != "signed" && v != "unsigned"))
      c.bad(name + ".grid", cat("must be \"signed\", \"unsigned\", \"log2\", \"logsqrt2\" or \"float\" (got ", v.dump(), ")"));
    const Grid named = v == "log2"       ? Grid::Log2
                       : v == "logsqrt2" ? Grid::LogSqrt2
                       : v == "float"    ? Grid::Float
                       : v == "unsigned" ? Grid::Unsigned
                                         : Grid::Signed;
    if (j.contains("unsigned") && named != g) c.bad(name + ".grid", "contradicts \"unsigned\"");
    g = named;
  }
  return g;
}

// `name` is "x" (the input operand) or "w" of site `id`: which grids and granularities it may use.
OperandQuant operand_from_json(const Ctx& c, const std::string& name, const json& j, const SiteId& id) {
  if (!j.is_object()) c.bad(name, "must be an object");
  const bool input = name == "x";
  OperandQuant q;
  if (!j.contains("bits")) c.bad(name + ".bits", "is missing");
  q.bits = bits_of(c, name + ".bits", j["bits"], true);
  if (!q.quantized()) return q;
  q.grid = grid_of(c, name, j);
  if (j.contains("granularity")) {
    const json& v = j["granularity"];
    if (!v.is_string() || (v != "tensor" && v != "token"))
      c.bad(name + ".granularity", cat("must be \"tensor\" or \"token\" (got ", v.dump(), ")"));
    q.per_token = v == "token";
  }
  if (q.grid == Grid::Unsigned && !input) c.bad("w.unsigned", "only the input operand may use an unsigned grid");
  if (is_level_grid(q.grid) && !input) c.bad("w.grid", "only the input operand may use a level grid");
  if (is_level_grid(q.grid) && id.kind != SiteKind::MatmulAV)
    c.bad(name + ".grid", "level grids are for the softmax output (the input of matmul_av) only");
  // Per-token steps: the input of a linear site (asymmetric rows, quantizer.h: token_quant), or
  // Q and K of matmul_qk (symmetric rows, quantizer.h: token_step_symmetric).
  const bool qk = id.kind == SiteKind::MatmulQK;
  if (q.per_token && !input && !qk) c.bad(name + ".granularity", "per-token steps are for the input operand only (and K of matmul_qk)");
  if (q.per_token && id.is_attention() && !qk)
    c.bad(name + ".granularity", "per-token steps are for the inputs of linear sites and for Q and K of matmul_qk");
  if (q.per_token && q.grid != Grid::Signed) c.bad(name + ".granularity", "per-token steps use their own grid, not " + std::string(grid_name(q.grid)));
  if (j.contains("token_clip")) {
    if (!q.per_token) c.bad(name + ".token_clip", "is for per-token inputs (\"granularity\": \"token\") only");
    if (qk) c.bad(name + ".token_clip", "is for the per-token inputs of linear sites (Q and K rows take their max)");
    const json& v = j["token_clip"];
    if (!v.is_number() || !std::isfinite(v.get<double>()) || !(v.get<double>() > 0) || !(v.get<double>() <= 1))
      c.bad(name + ".token_clip", cat("must be a number in (0, 1] (got ", v.dump(), ")"));
    q.token_clip = v.get<float>();
  }
  if (j.contains("token_group")) {
    if (!q.per_token) c.bad(name + ".token_group", "is for per-token inputs (\"granularity\": \"token\") only");
    if (qk) c.bad(name + ".token_group", "is for the per-token inputs of linear sites (a Q or K row is one group)");
    if (!json_int_in(j["token_group"], 1, 1 << 20, &q.token_group))
      c.bad(name + ".token_group", cat("must be a whole number of channels >= 1 (got ", j["token_group"].dump(), ")"));
  }
  if (q.per_token && q.bits > OperandQuant::kMaxPerTokenBits)
    c.bad(name + ".bits", cat("per-token quantization takes 2..", OperandQuant::kMaxPerTokenBits, " bits (got ", q.bits, ")"));
  if (q.per_token || is_level_grid(q.grid)) {
    if (j.contains("scale")) c.bad(name + ".scale", q.per_token ? "is not stored for per-token steps (each row has its own)" : "is fixed (2^-15) for a level grid");
    q.scale = q.per_token ? 0.0f : kLevelStep;
  } else {
    if (!j.contains("scale")) c.bad(name + ".scale", "is missing");
    q.scale = positive_scale(c, name + ".scale", j["scale"]);
  }
  if (j.contains("channel_scales")) q.channel_scales = scale_array(c, name + ".channel_scales", j["channel_scales"]);
  if (j.contains("channel_bits")) {
    const json& a = j["channel_bits"];
    if (!a.is_array() || a.empty()) c.bad(name + ".channel_bits", "must be a non-empty array");
    for (size_t i = 0; i < a.size(); ++i) q.channel_bits.push_back(bits_of(c, cat(name, ".channel_bits[", i, "]"), a[i], false));
    if (q.channel_scales.size() != q.channel_bits.size())
      c.bad(name + ".channel_bits", "needs channel_scales of the same length");
  }
  if (j.contains("head_scales")) {
    if (!id.is_attention()) c.bad(name + ".head_scales", "per-head steps are for attention sites only");
    if (q.per_token || is_level_grid(q.grid)) c.bad(name + ".head_scales", "need a uniform grid with a stored step");
    q.head_scales = scale_array(c, name + ".head_scales", j["head_scales"]);
  }
  return q;
}

// Reads the weight codes of `coded` sites from the companion file named at the top level of
// the plan JSON, in the directory of `source`.
void read_codes(const json& j, const std::string& source, const std::vector<std::string>& coded, QuantPlan& p) {
  Ctx top{source, ""};
  if (!j.contains("weight_codes") || !j["weight_codes"].is_object())
    top.bad("weight_codes", "is missing (sites have weight codes; the plan must name their file)");
  const json& wc = j["weight_codes"];
  if (!wc.contains("file") || !wc["file"].is_string()) top.bad("weight_codes.file", "must be a string");
  if (!wc.contains("content_fnv1a64") || !wc["content_fnv1a64"].is_string())
    top.bad("weight_codes.content_fnv1a64", "must be a string");
  const std::string path = companion_path(wc["file"].get<std::string>(), top, "weight_codes.file");
  SafeTensorsFile st = SafeTensorsFile::open(path);
  for (const auto& name : st.names())
    if (std::find(coded.begin(), coded.end(), name) == coded.end())
      fail(ErrorKind::Model, path, ": tensor '", name, "' is not a site with weight codes in ", source);
  for (const auto& name : coded) {
    if (!st.has(name)) fail(ErrorKind::Model, path, ": no codes for site '", name, "' (", source, " says it has them)");
    const TensorInfo& ti = st.info(name);
    SitePlan& s = p.sites.at(name);
    const int64_t N = int64_t(s.w.channel_scales.size());
    if (ti.dtype != DType::I16 || ti.shape.size() != 2 || ti.shape[0] != N || ti.shape[1] < 1)
      fail(ErrorKind::Model, path, ": tensor '", name, "' must be I16 [", N, ", K] (got ", dtype_name(ti.dtype), " ",
           shape_str(ti.shape), ")");
    const int64_t K = ti.shape[1];
    std::span<const uint8_t> b = st.bytes(name);
    s.weight_codes.resize(size_t(N * K));
    for (int64_t c = 0; c < N; ++c) {
      const QRange r = s.w.channel_range(size_t(c));
      for (int64_t k = 0; k < K; ++k) {
        const size_t i = size_t(c * K + k);
        const int16_t v = int16_t(uint16_t(b[2 * i]) | uint16_t(uint16_t(b[2 * i + 1]) << 8));
        if (v < r.lo || v > r.hi)
          fail(ErrorKind::Model, path, ": site '", name, "' channel ", c, ": code ", v, " is outside its grid [", r.lo,
               ", ", r.hi, "]");
        s.weight_codes[i] = v;
      }
    }
  }
  const std::string want = wc["content_fnv1a64"].get<std::string>(), got = codes_hash(p);
  if (want != got)
    fail(ErrorKind::Model, path, ": weight codes do not match ", source, " (content hash ", got, ", plan says ", want,
         ")");
}

std::string compensation_tensor(int block, const char* what) { return cat("blocks.", block, ".compensation.", what); }

// FNV-1a 64 over the compensation, in block order: block index (4 bytes LE), then the weight's
// and the bias's floats (4 bytes LE each).
std::string compensation_hash(const QuantPlan& p) {
  uint64_t h = fnv1a64(nullptr, 0);
  for (const auto& [i, c] : p.compensation) {
    const int32_t b = i;
    h = fnv1a64(&b, sizeof b, h);
    h = fnv1a64(c.w.data(), c.w.size() * sizeof(float), h);
    h = fnv1a64(c.b.data(), c.b.size() * sizeof(float), h);
  }
  return hex64(h);
}

// Reads the compensation of the blocks the plan JSON lists from its companion file.
void read_compensation(const json& j, const std::string& source, QuantPlan& p) {
  Ctx top{source, "compensation."};
  const json& cj = j["compensation"];
  if (!cj.is_object()) Ctx{source, ""}.bad("compensation", "must be an object {file, blocks, content_fnv1a64}");
  for (const char* k : {"file", "content_fnv1a64"})
    if (!cj.contains(k) || !cj[k].is_string()) top.bad(k, "must be a string");
  if (!cj.contains("blocks") || !cj["blocks"].is_array() || cj["blocks"].empty())
    top.bad("blocks", "must be a non-empty array of block indices");
  const std::string path = companion_path(cj["file"].get<std::string>(), top, "file");
  SafeTensorsFile st = SafeTensorsFile::open(path);
  std::vector<std::string> expected;
  for (size_t k = 0; k < cj["blocks"].size(); ++k) {
    int b = -1;
    if (!json_int_in(cj["blocks"][k], 0, 1 << 20, &b)) top.bad(cat("blocks[", k, "]"), "must be a block index >= 0");
    if (p.compensation.count(b)) top.bad(cat("blocks[", k, "]"), cat("block ", b, " is listed twice"));
    const std::string wn = compensation_tensor(b, "weight"), bn = compensation_tensor(b, "bias");
    for (const auto& n : {wn, bn})
      if (!st.has(n)) fail(ErrorKind::Model, path, ": no tensor '", n, "' (", source, " lists block ", b, ")");
    const TensorInfo& wi = st.info(wn);
    if (wi.dtype != DType::F32 || wi.shape.size() != 2 || wi.shape[0] != wi.shape[1] || wi.shape[0] < 1)
      fail(ErrorKind::Model, path, ": tensor '", wn, "' must be F32 [D, D] (got ", dtype_name(wi.dtype), " ",
           shape_str(wi.shape), ")");
    BlockCompensation c;
    {
      const Tensor t = st.to_f32(wn);
      c.w.assign(t.data.begin(), t.data.end());
    }
    {
      const Tensor t = st.to_f32(bn, {wi.shape[0]});
      c.b.assign(t.data.begin(), t.data.end());
    }
    for (const auto* v : {&c.w, &c.b})
      for (float f : *v)
        if (!std::isfinite(f))
          fail(ErrorKind::Model, path, ": block ", b, " compensation holds a non-finite value (", f, ")");
    p.compensation[b] = std::move(c);
    expected.push_back(wn);
    expected.push_back(bn);
  }
  for (const auto& name : st.names())
    if (std::find(expected.begin(), expected.end(), name) == expected.end())
      fail(ErrorKind::Model, path, ": tensor '", name, "' is not the compensation of a block listed in ", source);
  const std::string want = cj["content_fnv1a64"].get<std::string>(), got = compensation_hash(p);
  if (want != got)
    fail(ErrorKind::Model, path, ": compensation does not match ", source, " (content hash ", got, ", plan says ", want,
         ")");
}

}  // namespace

std::string plan_codes_file_name(const std::string& plan_path) {
  return std::filesystem::path(plan_path).stem().string() + "_codes.safetensors";
}

std::string plan_compensation_file_name(const std::string& plan_path) {
  return std::filesystem::path(plan_path).stem().string() + "_compensation.safetensors";
}

int plan_format_version(const QuantPlan& p) {
  // Format 2 adds what a format-1 reader would silently misread (per-head steps, a rotation);
  // per-token inputs and level grids lack the `scale` a format-1 reader requires, so it refuses them.
  // Format 3 adds error compensation, which a format-2 reader would ignore; format 4 the per-token
  // clip ratio, likewise; format 5 GELU and softmax tables; format 6 per-token channel groups;
  // format 7 per-token steps with the tie-breaking stretch (quantizer.h kTokenStepStretch), which
  // a format-6 reader would compute without.
  // Format 8: per-token Q and K of matmul_qk (a format-7 reader refuses them by name).
  // Clip ratios and channel groups are on per-token inputs only, so formats 4 and 6 are read but
  // no longer written.
  for (const auto& kv : p.sites) {
    SiteId id;
    if (parse_site_name(kv.first, &id) && id.kind == SiteKind::MatmulQK && (kv.second.x.per_token || kv.second.w.per_token))
      return 8;
  }
  for (const auto& kv : p.sites)
    if (kv.second.x.per_token) return 7;
  if (!p.gelu_tables.empty() || p.softmax_table) return 5;
  if (!p.compensation.empty()) return 3;
  if (p.rotation) return 2;
  for (const auto& kv : p.sites)
    if (kv.second.x.per_head() || kv.second.w.per_head() || kv.second.x.per_token || is_level_grid(kv.second.x.grid))
      return 2;
  return 1;
}

ojson plan_to_json(const QuantPlan& p, const std::string& codes_file, const std::string& compensation_file) {
  ojson j;
  j["format"] = "vitq-plan";
  j["format_version"] = plan_format_version(p);
  j["tool_version"] = p.tool_version;
  j["method"] = p.method;
  j["architecture"] = p.architecture;
  j["settings"] = p.settings;
  j["calibration"] = p.calibration;
  if (!p.target.is_null()) j["target"] = p.target;
  if (any_codes(p))
    j["weight_codes"] = {{"file", codes_file}, {"dtype", "I16"}, {"content_fnv1a64", codes_hash(p)}};
  ojson sites = ojson::object();
  for (const auto& [name, s] : p.sites) {
    ojson e;
    e["x"] = operand_to_json(s.x);
    e["w"] = operand_to_json(s.w);
    if (!s.bias_correction.empty()) e["bias_correction"] = s.bias_correction;
    if (!s.weight_offset.empty()) e["weight_offset"] = s.weight_offset;
    if (s.has_weight_codes()) e["weight_codes"] = true;
    sites[name] = e;
  }
  j["sites"] = sites;
  if (!p.ln_smoothing.empty()) {
    ojson sm = ojson::object();
    for (const auto& [name, v] : p.ln_smoothing) sm[name] = v;
    j["ln_smoothing"] = sm;
  }
  if (!p.ln_shift.empty()) {
    ojson sh = ojson::object();
    for (const auto& [name, v] : p.ln_shift) sh[name] = v;
    j["ln_shift"] = sh;
  }
  if (p.rotation) {
    const PlanRotation& r = *p.rotation;
    j["rotation"] = {{"seed", r.seed}, {"residual", r.residual}, {"heads", r.heads}, {"mlp", r.mlp}};
  }
  if (!p.gelu_tables.empty()) {
    ojson g = ojson::object();
    for (const auto& [name, t] : p.gelu_tables) g[name] = {{"bits", t.bits}, {"scale", t.scale}, {"lo", t.lo}};
    j["gelu_tables"] = g;
  }
  if (p.softmax_table) j["softmax_table"] = {{"bits", p.softmax_table->bits}, {"range", p.softmax_table->range}};
  if (!p.compensation.empty()) {
    ojson blocks = ojson::array();
    for (const auto& kv : p.compensation) blocks.push_back(kv.first);
    j["compensation"] = {{"file", compensation_file}, {"dtype", "F32"}, {"blocks", blocks},
                         {"content_fnv1a64", compensation_hash(p)}};
  }
  return j;
}

// A top-level object of LayerNorm-fed site name -> finite float32 values (ln_smoothing, ln_shift).
static std::map<std::string, std::vector<float>> ln_site_vectors(const json& j, const char* field, const char* what,
                                                                 const std::string& source) {
  std::map<std::string, std::vector<float>> out;
  if (!j.contains(field)) return out;
  if (!j[field].is_object()) Ctx{source, ""}.bad(field, cat("must be an object (site name -> ", what, ")"));
  Ctx c{source, std::string(field) + "."};
  for (auto it = j[field].begin(); it != j[field].end(); ++it) {
    SiteId id;
    if (!parse_site_name(it.key(), &id) || (id.kind != SiteKind::Qkv && id.kind != SiteKind::Fc1))
      c.bad(it.key(), "is not a site fed by a LayerNorm (blocks.N.attn.qkv or blocks.N.mlp.fc1)");
    out[it.key()] = float_array(c, it.key(), it.value());
  }
  return out;
}

static PlanRotation rotation_from_json(const json& r, const std::string& source) {
  Ctx c{source, "rotation."};
  if (!r.is_object()) Ctx{source, ""}.bad("rotation", "must be an object {seed, residual, heads, mlp}");
  PlanRotation out;
  for (auto it = r.begin(); it != r.end(); ++it)
    if (it.key() != "seed" && it.key() != "residual" && it.key() != "heads" && it.key() != "mlp")
      c.bad(it.key(), "is not a rotation field (seed, residual, heads, mlp)");
  if (r.contains("seed")) {
    if (!r["seed"].is_number_unsigned()) c.bad("seed", cat("must be an integer in [0, 2^64) (got ", r["seed"].dump(), ")"));
    out.seed = r["seed"].get<uint64_t>();
  }
  for (auto [key, field] : {std::pair{"residual", &out.residual}, {"heads", &out.heads}, {"mlp", &out.mlp}}) {
    if (!r.contains(key)) continue;
    if (!r[key].is_boolean()) c.bad(key, "must be true or false");
    *field = r[key].get<bool>();
  }
  if (!out.residual && !out.heads && !out.mlp) c.bad("residual", "a rotation rotates something: residual, heads or mlp");
  return out;
}

// gelu_tables: fc1 site name -> {bits, scale, lo}; the site must be quantized in the plan.
static std::map<std::string, GeluTable> gelu_tables_from_json(const json& g, const std::string& source,
                                                              const QuantPlan& p) {
  if (!g.is_object()) Ctx{source, ""}.bad("gelu_tables", "must be an object (blocks.N.mlp.fc1 -> {bits, scale, lo})");
  Ctx c{source, "gelu_tables."};
  std::map<std::string, GeluTable> out;
  for (auto it = g.begin(); it != g.end(); ++it) {
    const std::string& name = it.key();
    SiteId id;
    if (!parse_site_name(name, &id) || id.kind != SiteKind::Fc1)
      c.bad(name, "is not an fc1 site (blocks.N.mlp.fc1: the GELU's input is that site's output)");
    auto sp = p.sites.find(name);
    if (sp == p.sites.end() || !sp->second.x.quantized())
      c.bad(name, "a GELU table needs its fc1 site quantized in the plan");
    const json& e = it.value();
    if (!e.is_object()) c.bad(name, "must be an object {bits, scale, lo}");
    for (auto f = e.begin(); f != e.end(); ++f)
      if (f.key() != "bits" && f.key() != "scale" && f.key() != "lo")
        c.bad(name + "." + f.key(), "is not a GELU table field (bits, scale, lo)");
    GeluTable t;
    if (!e.contains("bits") || !e["bits"].is_number_integer() || e["bits"] < 4 || e["bits"] > 10)
      c.bad(name + ".bits", "must be an integer in [4, 10]");
    t.bits = e["bits"].get<int>();
    if (!e.contains("scale") || !e["scale"].is_number()) c.bad(name + ".scale", "must be a number");
    const double sc = e["scale"].get<double>();
    if (!(sc >= FLT_MIN && sc <= FLT_MAX)) c.bad(name + ".scale", cat("must be positive and finite (got ", sc, ")"));
    t.scale = float(sc);
    if (!e.contains("lo") || !e["lo"].is_number_integer() || e["lo"] < -(1 << 20) || e["lo"] > (1 << 20))
      c.bad(name + ".lo", "must be an integer in [-2^20, 2^20]");
    t.lo = e["lo"].get<int32_t>();
    out[name] = t;
  }
  return out;
}

QuantPlan plan_from_json(const json& j, const std::string& source) {
  Ctx top{source, ""};
  if (!j.is_object()) top.bad("plan", "must be a JSON object");
  if (!j.contains("format") || !j["format"].is_string() || j["format"] != "vitq-plan")
    top.bad("format", cat("must be \"vitq-plan\" (got ", j.contains("format") ? j["format"].dump() : "nothing", ")"));
  if (!j.contains("format_version") || !j["format_version"].is_number_integer() ||
      j["format_version"] < 1 || j["format_version"] > 8)
    top.bad("format_version", "must be 1 to 8 (this vitq reads plan formats 1 to 8)");
  QuantPlan p;
  auto str = [&](const char* k) {
    if (!j.contains(k) || !j[k].is_string()) top.bad(k, "must be a string");
    return j[k].get<std::string>();
  };
  p.tool_version = str("tool_version");
  p.method = str("method");
  p.architecture = str("architecture");
  if (j.contains("settings")) p.settings = j["settings"];
  if (j.contains("calibration")) p.calibration = j["calibration"];
  if (j.contains("target")) p.target = target_from_json(j["target"], source + ": target").json;
  if (!j.contains("sites") || !j["sites"].is_object()) top.bad("sites", "must be an object");
  std::vector<std::string> coded;  // sites whose weight codes are in the companion file
  for (auto it = j["sites"].begin(); it != j["sites"].end(); ++it) {
    SiteId id;
    Ctx c{source, "sites." + it.key() + "."};
    if (!parse_site_name(it.key(), &id)) top.bad("sites", cat("'", it.key(), "' is not a site name"));
    const json& e = it.value();
    if (!e.is_object()) c.bad("", "must be an object");
    SitePlan s;
    if (!e.contains("x")) c.bad("x", "is missing");
    if (!e.contains("w")) c.bad("w", "is missing");
    s.x = operand_from_json(c, "x", e["x"], id);
    s.w = operand_from_json(c, "w", e["w"], id);
    if (s.x.per_channel()) c.bad("x.channel_scales", "per-channel scales are for weights only");
    if (s.x.quantized() != s.w.quantized())
      c.bad("x.bits", "x and w must both be quantized or both FP32 (an integer product needs both)");
    if (s.x.groups_tokens() && s.w.quantized()) {
      int wmax = s.w.bits;
      for (int b : s.w.channel_bits) wmax = std::max(wmax, b);
      if (wmax > OperandQuant::kMaxPerTokenBits)
        c.bad("x.token_group", cat("needs weights of at most ", OperandQuant::kMaxPerTokenBits, " bits (w has ", wmax, ")"));
    }
    if (e.contains("bias_correction")) s.bias_correction = float_array(c, "bias_correction", e["bias_correction"]);
    if (e.contains("weight_offset")) {
      s.weight_offset = float_array(c, "weight_offset", e["weight_offset"]);
      if (id.is_attention()) c.bad("weight_offset", "is for the weights of linear sites only");
      if (!s.w.quantized()) c.bad("weight_offset", "needs a quantized weight");
      if (s.w.per_channel() && s.weight_offset.size() != s.w.channel_scales.size())
        c.bad("weight_offset", "needs one entry per channel of w.channel_scales");
    }
    if (e.contains("weight_codes")) {
      if (!e["weight_codes"].is_boolean()) c.bad("weight_codes", "must be true or false");
      if (e["weight_codes"].get<bool>()) {
        if (id.is_attention()) c.bad("weight_codes", "are for the weights of linear sites only");
        if (!s.w.per_channel()) c.bad("weight_codes", "need w.channel_scales");
        coded.push_back(it.key());
      }
    }
    p.sites[it.key()] = std::move(s);
  }
  if (!coded.empty()) read_codes(j, source, coded, p);
  p.ln_smoothing = ln_site_vectors(j, "ln_smoothing", "factors", source);
  for (const auto& [name, v] : p.ln_smoothing)
    for (float f : v)
      if (!(f >= FLT_MIN)) Ctx{source, "ln_smoothing."}.bad(name, "factors must be positive and finite (normal float32 values)");
  p.ln_shift = ln_site_vectors(j, "ln_shift", "shifts", source);
  if (j.contains("rotation")) p.rotation = rotation_from_json(j["rotation"], source);
  if (j.contains("compensation")) read_compensation(j, source, p);
  if (j.contains("gelu_tables")) p.gelu_tables = gelu_tables_from_json(j["gelu_tables"], source, p);
  if (j.contains("softmax_table")) {
    const json& e = j["softmax_table"];
    Ctx c{source, "softmax_table."};
    if (!e.is_object()) top.bad("softmax_table", "must be an object {bits, range}");
    for (auto f = e.begin(); f != e.end(); ++f)
      if (f.key() != "bits" && f.key() != "range") c.bad(f.key(), "is not a softmax table field (bits, range)");
    SoftmaxTable t;
    if (!e.contains("bits") || !e["bits"].is_number_integer() || e["bits"] < 6 || e["bits"] > 10)
      c.bad("bits", "must be an integer in [6, 10]");
    t.bits = e["bits"].get<int>();
    if (!e.contains("range") || !e["range"].is_number()) c.bad("range", "must be a number");
    const double r = e["range"].get<double>();
    if (!(r >= 1.0 && r <= 88.0)) c.bad("range", cat("must be in [1, 88] (got ", r, ")"));
    t.range = float(r);
    p.softmax_table = t;
  }
  return p;
}

void save_plan(const QuantPlan& plan, const std::string& path) {
  const std::string codes_file = plan_codes_file_name(path);
  if (any_codes(plan)) {
    std::vector<TensorBlob> blobs;
    for (const auto& [name, s] : plan.sites) {
      if (!s.has_weight_codes()) continue;
      const int64_t N = int64_t(s.w.channel_scales.size());
      if (N == 0 || s.weight_codes.size() % size_t(N) != 0)
        fail(ErrorKind::Internal, "site ", name, ": weight codes do not form [channels, K]");
      TensorBlob b{name, DType::I16, {N, int64_t(s.weight_codes.size()) / N}, {}};
      b.data.resize(s.weight_codes.size() * 2);
      for (size_t i = 0; i < s.weight_codes.size(); ++i) {  // little-endian, whatever the host
        const uint16_t u = uint16_t(s.weight_codes[i]);
        b.data[2 * i] = uint8_t(u & 0xff);
        b.data[2 * i + 1] = uint8_t(u >> 8);
      }
      blobs.push_back(std::move(b));
    }
    write_safetensors((std::filesystem::path(path).parent_path() / codes_file).string(), blobs,
                      {{"format", "vitq-plan-codes"}, {"layout", "I16 [N, K] integer weight codes per site"}});
  }
  const std::string comp_file = plan_compensation_file_name(path);
  if (!plan.compensation.empty()) {
    std::vector<TensorBlob> blobs;
    for (const auto& [i, c] : plan.compensation) {
      const int64_t D = int64_t(c.b.size());
      if (D == 0 || c.w.size() != size_t(D * D))
        fail(ErrorKind::Internal, "block ", i, ": compensation is not [D, D] and [D]");
      Tensor w({D, D}), b({D});
      w.data.assign(c.w.begin(), c.w.end());
      b.data.assign(c.b.begin(), c.b.end());
      blobs.push_back(make_f32_blob(compensation_tensor(i, "weight"), w));
      blobs.push_back(make_f32_blob(compensation_tensor(i, "bias"), b));
    }
    write_safetensors((std::filesystem::path(path).parent_path() / comp_file).string(), blobs,
                      {{"format", "vitq-plan-compensation"},
                       {"layout", "F32 blocks.i.compensation.weight [D, D] ([out, in]) and .bias [D] per block"}});
  }
  std::ofstream f(path);
  if (!f) fail(ErrorKind::Io, path, ": cannot write");
  // nlohmann writes floats with the shortest representation that round-trips.
  f << plan_to_json(plan, codes_file, comp_file).dump(1) << "\n";
  if (!f) fail(ErrorKind::Io, path, ": write failed");
}

QuantPlan load_plan(const std::string& path) {
  const json j = read_json_file(path);
  return with_json_errors(path, [&] { return plan_from_json(j, path); });
}

void check_plan_matches(const QuantPlan& plan, const ViTConfig& cfg, const std::string& source) {
  std::map<std::string, SiteShape> shapes;
  for (const auto& s : model_sites(cfg)) shapes[s.id.name()] = s;
  for (const auto& [name, sp] : plan.sites) {
    auto it = shapes.find(name);
    if (it == shapes.end())
      fail(ErrorKind::Model, source, ": site '", name, "' does not exist in this model (", cfg.architecture, ", depth ",
           cfg.depth, ")");
    const SiteShape& sh = it->second;
    if (sp.w.per_channel() && sp.w.channel_scales.size() != size_t(sh.N))
      fail(ErrorKind::Model, source, ": site '", name, "': w.channel_scales has ", sp.w.channel_scales.size(),
           " entries, the layer has ", sh.N, " output channels");
    if (sp.w.per_channel() && sh.id.is_attention())
      fail(ErrorKind::Model, source, ": site '", name, "': per-channel scales are for weights only");
    if (!sp.weight_offset.empty() && sp.weight_offset.size() != size_t(sh.N))
      fail(ErrorKind::Model, source, ": site '", name, "': weight_offset has ", sp.weight_offset.size(),
           " entries, the layer has ", sh.N, " output channels");
    if (sp.has_weight_codes() && sp.weight_codes.size() != size_t(sh.N) * size_t(sh.K))
      fail(ErrorKind::Model, source, ": site '", name, "': weight codes have ", sp.weight_codes.size(),
           " entries, the layer has ", sh.N, " x ", sh.K, " weights");
    if (sp.x.groups_tokens() && sh.K % sp.x.token_group != 0)
      fail(ErrorKind::Model, source, ": site '", name, "': x.token_group ", sp.x.token_group, " does not divide the ",
           sh.K, " input channels");
    for (const OperandQuant* q : {&sp.x, &sp.w})
      if (q->per_head() && q->head_scales.size() != size_t(sh.groups_per_image))
        fail(ErrorKind::Model, source, ": site '", name, "': ", q == &sp.x ? "x" : "w", ".head_scales has ",
             q->head_scales.size(), " entries, the model has ", sh.groups_per_image, " heads");
    const size_t nb = size_t(sh.groups_per_image) * size_t(sh.N);
    if (!sp.bias_correction.empty() && sp.bias_correction.size() != nb)
      fail(ErrorKind::Model, source, ": site '", name, "': bias_correction has ", sp.bias_correction.size(),
           " entries, expected ", nb);
  }
  for (const auto& [i, comp] : plan.compensation) {
    const size_t D = size_t(cfg.embed_dim);
    if (i < 0 || i >= cfg.depth)
      fail(ErrorKind::Model, source, ": compensation of block ", i, ": the model has ", cfg.depth, " blocks");
    if (comp.b.size() != D || comp.w.size() != D * D)
      fail(ErrorKind::Model, source, ": compensation of block ", i, " is for embed_dim ", comp.b.size(),
           ", the model has ", D);
  }
  for (const auto& [name, t] : plan.gelu_tables)
    if (!shapes.count(name))
      fail(ErrorKind::Model, source, ": gelu_tables: site '", name, "' does not exist in this model (",
           cfg.architecture, ", depth ", cfg.depth, ")");
  for (const auto* field : {&plan.ln_smoothing, &plan.ln_shift}) {
    const char* what = field == &plan.ln_shift ? "ln_shift" : "ln_smoothing";
    for (const auto& [name, v] : *field) {
      auto it = shapes.find(name);
      if (it == shapes.end())
        fail(ErrorKind::Model, source, ": ", what, ": site '", name, "' does not exist in this model (",
             cfg.architecture, ", depth ", cfg.depth, ")");
      if (v.size() != size_t(it->second.K))
        fail(ErrorKind::Model, source, ": ", what, ": site '", name, "' has ", v.size(),
             field == &plan.ln_shift ? " shifts" : " factors", ", the layer has ", it->second.K, " input channels");
    }
  }
}

}  // namespace vitq
