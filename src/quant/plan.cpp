#include "quant/plan.h"

#include <cmath>
#include <fstream>

#include "core/error.h"
#include "model/vit_config.h"
#include "quant/quantizer.h"

namespace vitq {

using ojson = nlohmann::ordered_json;
using json = nlohmann::ordered_json;  // keeps the key order of settings on a round trip

const SitePlan* QuantPlan::find(const SiteId& id) const {
  auto it = sites.find(id.name());
  return it == sites.end() ? nullptr : &it->second;
}

bool QuantPlan::operator==(const QuantPlan& o) const {
  return method == o.method && settings == o.settings && calibration == o.calibration &&
         tool_version == o.tool_version && architecture == o.architecture && sites == o.sites;
}

namespace {

ojson operand_to_json(const OperandQuant& q) {
  ojson j;
  j["bits"] = q.bits;
  if (!q.quantized()) return j;
  if (q.is_unsigned) j["unsigned"] = true;
  j["scale"] = q.scale;
  if (q.per_channel()) j["channel_scales"] = q.channel_scales;
  if (!q.channel_bits.empty()) j["channel_bits"] = q.channel_bits;
  return j;
}

struct Ctx {
  const std::string& source;
  std::string where;
  [[noreturn]] void bad(const std::string& field, const std::string& why) const {
    fail(ErrorKind::Model, source, ": ", where, field, ": ", why);
  }
};

float positive_scale(const Ctx& c, const std::string& field, const json& v) {
  if (!v.is_number()) c.bad(field, "must be a number");
  const double d = v.get<double>();
  if (!(d > 0) || !std::isfinite(d) || d > 3e38) c.bad(field, cat("must be a positive finite step (got ", v.dump(), ")"));
  return float(d);
}

int bits_of(const Ctx& c, const std::string& field, const json& v, bool allow_zero) {
  if (!v.is_number_integer()) c.bad(field, "must be an integer");
  const int b = v.get<int>();
  if ((b == 0 && allow_zero) || (b >= kMinBits && b <= kMaxBits)) return b;
  c.bad(field, cat("must be ", allow_zero ? "0 (FP32) or " : "", "in [", kMinBits, ", ", kMaxBits, "] (got ", b, ")"));
}

OperandQuant operand_from_json(const Ctx& c, const std::string& name, const json& j) {
  if (!j.is_object()) c.bad(name, "must be an object");
  OperandQuant q;
  if (!j.contains("bits")) c.bad(name + ".bits", "is missing");
  q.bits = bits_of(c, name + ".bits", j["bits"], true);
  if (!q.quantized()) return q;
  if (j.contains("unsigned")) {
    if (!j["unsigned"].is_boolean()) c.bad(name + ".unsigned", "must be true or false");
    q.is_unsigned = j["unsigned"].get<bool>();
  }
  if (!j.contains("scale")) c.bad(name + ".scale", "is missing");
  q.scale = positive_scale(c, name + ".scale", j["scale"]);
  if (j.contains("channel_scales")) {
    const json& a = j["channel_scales"];
    if (!a.is_array() || a.empty()) c.bad(name + ".channel_scales", "must be a non-empty array");
    for (size_t i = 0; i < a.size(); ++i) q.channel_scales.push_back(positive_scale(c, cat(name, ".channel_scales[", i, "]"), a[i]));
  }
  if (j.contains("channel_bits")) {
    const json& a = j["channel_bits"];
    if (!a.is_array() || a.empty()) c.bad(name + ".channel_bits", "must be a non-empty array");
    for (size_t i = 0; i < a.size(); ++i) q.channel_bits.push_back(bits_of(c, cat(name, ".channel_bits[", i, "]"), a[i], false));
    if (q.channel_scales.size() != q.channel_bits.size())
      c.bad(name + ".channel_bits", "needs channel_scales of the same length");
  }
  return q;
}

}  // namespace

ojson plan_to_json(const QuantPlan& p) {
  ojson j;
  j["format"] = "vitq-plan";
  j["format_version"] = 1;
  j["tool_version"] = p.tool_version;
  j["method"] = p.method;
  j["architecture"] = p.architecture;
  j["settings"] = p.settings;
  j["calibration"] = p.calibration;
  ojson sites = ojson::object();
  for (const auto& [name, s] : p.sites) {
    ojson e;
    e["x"] = operand_to_json(s.x);
    e["w"] = operand_to_json(s.w);
    if (!s.bias_correction.empty()) e["bias_correction"] = s.bias_correction;
    sites[name] = e;
  }
  j["sites"] = sites;
  return j;
}

QuantPlan plan_from_json(const json& j, const std::string& source) {
  Ctx top{source, ""};
  if (!j.is_object()) top.bad("plan", "must be a JSON object");
  if (j.value("format", "") != "vitq-plan") top.bad("format", "must be \"vitq-plan\"");
  if (!j.contains("format_version") || !j["format_version"].is_number_integer() || j["format_version"] != 1)
    top.bad("format_version", "must be 1 (this vitq reads plan format 1)");
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
  if (!j.contains("sites") || !j["sites"].is_object()) top.bad("sites", "must be an object");
  for (auto it = j["sites"].begin(); it != j["sites"].end(); ++it) {
    SiteId id;
    Ctx c{source, "sites." + it.key() + "."};
    if (!parse_site_name(it.key(), &id)) top.bad("sites", cat("'", it.key(), "' is not a site name"));
    const json& e = it.value();
    if (!e.is_object()) c.bad("", "must be an object");
    SitePlan s;
    if (!e.contains("x")) c.bad("x", "is missing");
    if (!e.contains("w")) c.bad("w", "is missing");
    s.x = operand_from_json(c, "x", e["x"]);
    s.w = operand_from_json(c, "w", e["w"]);
    if (s.x.per_channel()) c.bad("x.channel_scales", "per-channel scales are for weights only");
    if (s.w.is_unsigned) c.bad("w.unsigned", "only the input operand may use an unsigned grid");
    if (s.x.quantized() != s.w.quantized())
      c.bad("x.bits", "x and w must both be quantized or both FP32 (an integer product needs both)");
    if (e.contains("bias_correction")) {
      const json& a = e["bias_correction"];
      if (!a.is_array()) c.bad("bias_correction", "must be an array");
      for (size_t i = 0; i < a.size(); ++i) {
        if (!a[i].is_number() || !std::isfinite(a[i].get<double>()))
          c.bad(cat("bias_correction[", i, "]"), "must be a finite number");
        s.bias_correction.push_back(a[i].get<float>());
      }
    }
    p.sites[it.key()] = std::move(s);
  }
  return p;
}

void save_plan(const QuantPlan& plan, const std::string& path) {
  std::ofstream f(path);
  if (!f) fail(ErrorKind::Io, path, ": cannot write");
  // nlohmann writes floats with the shortest representation that round-trips.
  f << plan_to_json(plan).dump(1) << "\n";
  if (!f) fail(ErrorKind::Io, path, ": write failed");
}

QuantPlan load_plan(const std::string& path) {
  std::ifstream f(path);
  if (!f) fail(ErrorKind::Io, path, ": cannot open");
  json j;
  try {
    j = json::parse(f);
  } catch (const json::exception& e) {
    fail(ErrorKind::Model, path, ": not valid JSON: ", e.what());
  }
  return plan_from_json(j, path);
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
    const size_t nb = size_t(sh.groups_per_image) * size_t(sh.N);
    if (!sp.bias_correction.empty() && sp.bias_correction.size() != nb)
      fail(ErrorKind::Model, source, ": site '", name, "': bias_correction has ", sp.bias_correction.size(),
           " entries, expected ", nb);
  }
}

}  // namespace vitq
