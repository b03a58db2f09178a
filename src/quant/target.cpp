#include "quant/target.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include "core/error.h"
#include "io/json_file.h"
#include "quant/builtin_targets.h"

namespace vitq {

namespace {

using ojson = nlohmann::ordered_json;

struct Ctx {
  const std::string& source;
  std::string where;
  [[noreturn]] void bad(const std::string& field, const std::string& why) const {
    fail(ErrorKind::Model, source, ": ", where, field, ": ", why);
  }
  // `j` must be an object with exactly these fields.
  const ojson& object(const ojson& j, const std::string& field, std::initializer_list<const char*> keys) const {
    if (!j.is_object()) bad(field, "must be an object");
    const std::string at = field.empty() ? "" : field + ".";
    for (const char* k : keys)
      if (!j.contains(k)) bad(at + k, "is missing");
    for (auto it = j.begin(); it != j.end(); ++it)
      if (std::none_of(keys.begin(), keys.end(), [&](const char* k) { return it.key() == k; }))
        bad(at + it.key(), "is not a field of a target description");
    return j;
  }
  bool boolean(const ojson& j, const std::string& field) const {
    const ojson& v = j[field.substr(field.rfind('.') + 1)];
    if (!v.is_boolean()) bad(field, "must be true or false");
    return v.get<bool>();
  }
  std::string string(const ojson& j, const std::string& field, std::initializer_list<const char*> allowed = {}) const {
    const ojson& v = j[field.substr(field.rfind('.') + 1)];
    if (!v.is_string() || v.get<std::string>().empty()) bad(field, "must be a non-empty string");
    const std::string s = v.get<std::string>();
    if (allowed.size() && std::none_of(allowed.begin(), allowed.end(), [&](const char* a) { return s == a; })) {
      std::string list;
      for (const char* a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      bad(field, cat("must be one of ", list, " (got \"", s, "\")"));
    }
    return s;
  }
};

Grid grid_from_name(const Ctx& c, const std::string& field, const std::string& s) {
  for (Grid g : {Grid::Signed, Grid::Unsigned, Grid::Log2, Grid::LogSqrt2, Grid::Float})
    if (s == grid_name(g)) return g;
  c.bad(field, cat("\"", s, "\" is not a grid (signed, unsigned, log2, logsqrt2, float)"));
}

}  // namespace

bool Target::allows_grid(Grid g) const { return std::find(inputs.grids.begin(), inputs.grids.end(), g) != inputs.grids.end(); }

Target target_from_json(const ojson& j, const std::string& source) {
  const Ctx c{source, ""};
  c.object(j, "", {"name", "summary", "runtime", "gemm", "weights", "inputs", "float_ops", "elementwise"});
  Target t;
  t.json = j;
  t.name = c.string(j, "name");
  t.summary = c.string(j, "summary");
  t.runtime = c.string(j, "runtime", {"vitq", "onnx"});
  if (!j["gemm"].is_array() || j["gemm"].empty()) c.bad("gemm", "must be a non-empty array of {input, weight, accumulator, max_bits}");
  t.max_bits = 0;
  for (size_t i = 0; i < j["gemm"].size(); ++i) {
    const std::string f = cat("gemm[", i, "]");
    const ojson& g = c.object(j["gemm"][i], f, {"input", "weight", "accumulator", "max_bits"});
    c.string(g, f + ".input", {"u8", "s8", "s16"});
    c.string(g, f + ".weight", {"s8", "s16"});
    c.string(g, f + ".accumulator", {"s32"});
    int b = 0;
    if (!json_int_in(g["max_bits"], kMinBits, kMaxBits, &b)) c.bad(f + ".max_bits", cat("must be an integer in [", kMinBits, ", ", kMaxBits, "]"));
    t.max_bits = std::max(t.max_bits, b);
  }
  const ojson& w = c.object(j["weights"], "weights", {"per_channel", "channel_bits", "offset"});
  t.weights.per_channel = c.boolean(w, "weights.per_channel");
  t.weights.channel_bits = c.boolean(w, "weights.channel_bits");
  t.weights.offset = c.boolean(w, "weights.offset");
  if (t.weights.channel_bits && !t.weights.per_channel) c.bad("weights.channel_bits", "needs weights.per_channel");
  const ojson& in = c.object(j["inputs"], "inputs", {"grids", "per_head", "per_token"});
  if (!in["grids"].is_array() || in["grids"].empty()) c.bad("inputs.grids", "must be a non-empty array of grid names");
  for (size_t i = 0; i < in["grids"].size(); ++i) {
    const std::string f = cat("inputs.grids[", i, "]");
    if (!in["grids"][i].is_string()) c.bad(f, "must be a grid name");
    t.inputs.grids.push_back(grid_from_name(c, f, in["grids"][i].get<std::string>()));
  }
  if (!t.allows_grid(Grid::Signed)) c.bad("inputs.grids", "must include \"signed\" (the weights' and the default grid)");
  t.inputs.per_head = c.boolean(in, "inputs.per_head");
  t.inputs.per_token = c.boolean(in, "inputs.per_token");
  const ojson& fo = c.object(j["float_ops"], "float_ops", {"compensation", "mlp_rotation"});
  t.float_ops.compensation = c.boolean(fo, "float_ops.compensation");
  t.float_ops.mlp_rotation = c.boolean(fo, "float_ops.mlp_rotation");
  const ojson& el = c.object(j["elementwise"], "elementwise", {"gelu", "softmax", "layernorm", "requantize"});
  const std::string gelu = c.string(el, "elementwise.gelu", {"fp32", "lut8", "lut10"});
  t.elementwise.gelu_table_bits = gelu == "lut10" ? 10 : gelu == "lut8" ? 8 : 0;
  const std::string softmax = c.string(el, "elementwise.softmax", {"fp32", "lut8", "lut10"});
  t.elementwise.softmax_table_bits = softmax == "lut10" ? 10 : softmax == "lut8" ? 8 : 0;
  for (const char* k : {"layernorm", "requantize"}) c.string(el, cat("elementwise.", k), {"fp32"});
  return t;
}

std::vector<std::string> builtin_target_names() {
  std::vector<std::string> names;
  for (const BuiltinTarget& b : builtin_targets()) names.push_back(b.name);
  std::sort(names.begin(), names.end());
  return names;
}

Target load_target(const std::string& name_or_path) {
  for (const BuiltinTarget& b : builtin_targets())
    if (name_or_path == b.name) {
      const std::string source = cat("built-in target ", b.name, " (targets/", b.name, ".json)");
      return target_from_json(ojson::parse(b.json), source);
    }
  if (!std::filesystem::exists(name_or_path)) {
    std::string list;
    for (const std::string& n : builtin_target_names()) list += (list.empty() ? "" : ", ") + n;
    fail(ErrorKind::Usage, "--target ", name_or_path, ": neither a built-in target (", list,
         ") nor a description file");
  }
  return target_from_json(read_json_file(name_or_path), name_or_path);
}

namespace {

void check_operand(const std::string& site, const char* which, const OperandQuant& q, bool weight_of_linear,
                   const Target& t, std::vector<TargetViolation>& out) {
  if (!q.quantized()) return;
  const std::string at = cat("site ", site, ", ", which, ": ");
  const bool level = is_level_grid(q.grid);
  if (!level && q.bits > t.max_bits)
    out.push_back({TargetGap::Width, cat(at, q.bits, "-bit codes; ", t.name, "'s widest GEMM takes ", t.max_bits, " bits")});
  for (int b : q.channel_bits)
    if (b > t.max_bits) {
      out.push_back({TargetGap::Width, cat(at, b, "-bit channel codes; ", t.name, "'s widest GEMM takes ", t.max_bits, " bits")});
      break;
    }
  if (!q.channel_bits.empty() && !t.weights.channel_bits)
    out.push_back({TargetGap::ChannelWidths, cat(at, "per-channel bit-widths; ", t.name, " has one width per tensor")});
  if (q.per_channel() && !t.weights.per_channel)
    out.push_back({TargetGap::ChannelSteps, cat(at, "per-channel steps; ", t.name, " has one weight step per tensor")});
  if (weight_of_linear) return;  // the rest is about activations (and the attention's K, V)
  if (!t.allows_grid(q.grid))
    out.push_back({TargetGap::Grid, cat(at, "the ", grid_name(q.grid), " grid; ", t.name, " does not run it")});
  if (q.per_token && !t.inputs.per_token)
    out.push_back({TargetGap::PerToken, cat(at, "dynamic per-token steps; ", t.name, " has static steps only")});
  if (q.per_head() && !t.inputs.per_head)
    out.push_back({TargetGap::PerHead, cat(at, "per-head steps; ", t.name, " has one step per tensor")});
}

}  // namespace

std::vector<TargetViolation> plan_target_violations(const QuantPlan& plan, const Target& t) {
  std::vector<TargetViolation> out;
  for (const auto& [name, sp] : plan.sites) {
    SiteId id;
    const bool attention = parse_site_name(name, &id) && id.is_attention();
    check_operand(name, "x", sp.x, false, t, out);
    check_operand(name, "w", sp.w, !attention, t, out);
    if (!sp.weight_offset.empty() && !t.weights.offset)
      out.push_back({TargetGap::WeightOffset,
                     cat("site ", name, ", weight_offset: asymmetric weights; ", t.name, " has symmetric weights (zero point 0)")});
  }
  if (!plan.compensation.empty() && !t.float_ops.compensation)
    out.push_back({TargetGap::FloatGemm, cat("compensation: QwT maps of ", plan.compensation.size(), " blocks (float GEMMs); ",
                                             t.name, " runs no float GEMMs beside the quantized ones")});
  for (const auto& [name, g] : plan.gelu_tables)
    if (g.bits > t.elementwise.gelu_table_bits)
      out.push_back({TargetGap::Elementwise,
                     cat("gelu_tables.", name, ": a ", g.bits, "-bit GELU table; ", t.name,
                         t.elementwise.gelu_table_bits ? cat(" runs tables of at most ", t.elementwise.gelu_table_bits, " bits")
                                                       : std::string(" runs GELU in float only"))});
  if (plan.softmax_table && plan.softmax_table->bits > t.elementwise.softmax_table_bits)
    out.push_back({TargetGap::Elementwise,
                   cat("softmax_table: a ", plan.softmax_table->bits, "-bit exponent table; ", t.name,
                       t.elementwise.softmax_table_bits
                           ? cat(" runs tables of at most ", t.elementwise.softmax_table_bits, " bits")
                           : std::string(" runs the softmax in float only"))});
  if (plan.rotation && plan.rotation->mlp && !t.float_ops.mlp_rotation)
    out.push_back({TargetGap::FloatGemm,
                   cat("rotation.mlp: an online Hadamard of fc2's input (a float GEMM); ", t.name, " does not run it")});
  return out;
}

}  // namespace vitq
