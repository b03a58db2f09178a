// Hardware descriptions (quant/target.h): the built-ins, the schema's errors (file, field,
// reason), and which plan entries each target refuses — on a plan written here with every
// option, against the rules the descriptions state.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "core/error.h"
#include "quant/plan.h"
#include "quant/target.h"

namespace vitq {
namespace {

OperandQuant op(int bits, float scale = 0.01f, Grid g = Grid::Signed) {
  OperandQuant q;
  q.bits = bits;
  q.scale = scale;
  q.grid = g;
  return q;
}

SitePlan site(const OperandQuant& x, const OperandQuant& w) {
  SitePlan sp;
  sp.x = x;
  sp.w = w;
  return sp;
}

// Every entry a plan may hold, one site each: per-token qkv input, per-head attention operands,
// a log2 softmax grid, 10-bit fc1, per-channel widths on fc2, an asymmetric proj weight, QwT
// compensation and the MLP rotation.
QuantPlan plan_with_everything() {
  QuantPlan p;
  p.method = "test";
  SitePlan qkv = site(op(8), op(8));
  qkv.x.per_token = true;
  qkv.x.scale = 0;
  p.sites["blocks.0.attn.qkv"] = qkv;
  SitePlan qk = site(op(8), op(8));
  qk.x.head_scales = {0.1f, 0.2f};
  qk.w.head_scales = {0.1f, 0.2f};
  p.sites["blocks.0.attn.matmul_qk"] = qk;
  p.sites["blocks.0.attn.matmul_av"] = site(op(8, 1.0f / 32768, Grid::Log2), op(8));
  SitePlan proj = site(op(8), op(8));
  proj.w.channel_scales = {0.1f, 0.2f};
  proj.weight_offset = {0.5f, -0.5f};
  p.sites["blocks.0.attn.proj"] = proj;
  p.sites["blocks.0.mlp.fc1"] = site(op(10), op(10));
  SitePlan fc2 = site(op(8), op(6));
  fc2.w.channel_scales = {0.1f, 0.2f};
  fc2.w.channel_bits = {4, 8};
  p.sites["blocks.0.mlp.fc2"] = fc2;
  p.compensation[0] = BlockCompensation{{1, 0, 0, 1}, {0, 0}};
  p.rotation = PlanRotation{0, true, true, true};
  return p;
}

int count(const std::vector<TargetViolation>& v, const std::string& part) {
  return int(std::count_if(v.begin(), v.end(), [&](const TargetViolation& e) { return e.what.find(part) != std::string::npos; }));
}

int count(const std::vector<TargetViolation>& v, TargetGap gap) {
  return int(std::count_if(v.begin(), v.end(), [&](const TargetViolation& e) { return e.gap == gap; }));
}

std::string error_of(const std::function<void()>& f, ErrorKind* kind = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (kind) *kind = e.kind();
    return e.what();
  }
  return "";
}

TEST(Target, BuiltinsParseAndSayWhatTheyRun) {
  EXPECT_EQ(builtin_target_names(), (std::vector<std::string>{"cpu-vnni", "int8-only", "onnx-qdq"}));
  const Target cpu = load_target("cpu-vnni"), npu = load_target("int8-only"), qdq = load_target("onnx-qdq");
  EXPECT_EQ(cpu.max_bits, 10);
  EXPECT_EQ(npu.max_bits, 8);
  EXPECT_EQ(qdq.max_bits, 8);
  EXPECT_TRUE(cpu.inputs.per_token && cpu.inputs.per_head && cpu.allows_grid(Grid::LogSqrt2) && cpu.weights.offset);
  EXPECT_FALSE(npu.inputs.per_token || npu.inputs.per_head || npu.float_ops.compensation || npu.allows_grid(Grid::Log2));
  EXPECT_FALSE(qdq.weights.offset || qdq.inputs.per_head || qdq.inputs.per_token);
  EXPECT_TRUE(qdq.float_ops.compensation && qdq.weights.per_channel);
  EXPECT_EQ(cpu.json["name"], "cpu-vnni");
  EXPECT_EQ(cpu.elementwise.gelu_table_bits, 10);
  EXPECT_EQ(npu.elementwise.gelu_table_bits, 8);
  EXPECT_EQ(qdq.elementwise.gelu_table_bits, 0);
  EXPECT_EQ(cpu.elementwise.softmax_table_bits, 10);
  EXPECT_EQ(npu.elementwise.softmax_table_bits, 8);
  EXPECT_EQ(qdq.elementwise.softmax_table_bits, 0);
}

TEST(Target, EachTargetRefusesExactlyWhatItCannotRun) {
  const QuantPlan p = plan_with_everything();
  EXPECT_TRUE(plan_target_violations(p, load_target("cpu-vnni")).empty());

  const std::vector<TargetViolation> npu = plan_target_violations(p, load_target("int8-only"));
  EXPECT_EQ(count(npu, "blocks.0.mlp.fc1"), 2);           // x and w at 10 bits
  EXPECT_EQ(count(npu, "10-bit codes"), 2);
  EXPECT_EQ(count(npu, "blocks.0.attn.qkv, x: dynamic per-token"), 1);
  EXPECT_EQ(count(npu, "blocks.0.attn.matmul_qk"), 2);    // per-head x and w
  EXPECT_EQ(count(npu, "blocks.0.attn.matmul_av, x: the log2 grid"), 1);
  EXPECT_EQ(count(npu, "compensation"), 1);
  EXPECT_EQ(count(npu, "rotation.mlp"), 1);
  EXPECT_EQ(count(npu, "asymmetric"), 0);                 // int8-only takes weight zero points
  EXPECT_EQ(count(npu, "site blocks.0.mlp.fc2"), 0);      // per-channel widths within 8 bits
  EXPECT_EQ(npu.size(), 8u);
  EXPECT_EQ(count(npu, TargetGap::Width), 2);
  EXPECT_EQ(count(npu, TargetGap::PerHead), 2);
  EXPECT_EQ(count(npu, TargetGap::FloatGemm), 2);

  const std::vector<TargetViolation> qdq = plan_target_violations(p, load_target("onnx-qdq"));
  EXPECT_EQ(count(qdq, "blocks.0.attn.proj, weight_offset: asymmetric"), 1);
  EXPECT_EQ(count(qdq, "compensation"), 0);
  EXPECT_EQ(count(qdq, "rotation.mlp"), 0);
  EXPECT_EQ(qdq.size(), 7u);
  EXPECT_EQ(count(qdq, TargetGap::WeightOffset), 1);  // int8-only's 8 − compensation − rotation + the asymmetric weight

  // GELU tables: cpu-vnni runs them up to 10 bits, int8-only up to 8, onnx-qdq none.
  QuantPlan g = plan_with_everything();
  g.gelu_tables["blocks.0.mlp.fc1"] = GeluTable{10, 0.01f, -300};
  g.gelu_tables["blocks.1.mlp.fc1"] = GeluTable{8, 0.01f, -100};
  EXPECT_TRUE(plan_target_violations(g, load_target("cpu-vnni")).empty());
  const std::vector<TargetViolation> gn = plan_target_violations(g, load_target("int8-only"));
  EXPECT_EQ(count(gn, TargetGap::Elementwise), 1);
  EXPECT_EQ(count(gn, "gelu_tables.blocks.0.mlp.fc1: a 10-bit GELU table; int8-only runs tables of at most 8 bits"), 1);
  const std::vector<TargetViolation> gq = plan_target_violations(g, load_target("onnx-qdq"));
  EXPECT_EQ(count(gq, TargetGap::Elementwise), 2);
  EXPECT_EQ(count(gq, "onnx-qdq runs GELU in float only"), 2);
  g.softmax_table = SoftmaxTable{10, 16.0f};
  EXPECT_TRUE(plan_target_violations(g, load_target("cpu-vnni")).empty());
  EXPECT_EQ(count(plan_target_violations(g, load_target("int8-only")),
                  "softmax_table: a 10-bit exponent table; int8-only runs tables of at most 8 bits"), 1);
  EXPECT_EQ(count(plan_target_violations(g, load_target("onnx-qdq")), "onnx-qdq runs the softmax in float only"), 1);

  // A per-tensor 8-bit plan runs everywhere.
  QuantPlan plain;
  plain.sites["blocks.0.attn.qkv"] = site(op(8), op(8));
  plain.sites["blocks.0.attn.matmul_av"] = site(op(8, 1.0f / 255, Grid::Unsigned), op(8));
  for (const std::string& n : builtin_target_names()) EXPECT_TRUE(plan_target_violations(plain, load_target(n)).empty()) << n;
}

TEST(Target, BadDescriptionsNameTheSourceAndField) {
  const nlohmann::ordered_json good = load_target("int8-only").json;
  auto error_with = [&](const std::function<void(nlohmann::ordered_json&)>& edit) {
    nlohmann::ordered_json j = good;
    edit(j);
    ErrorKind kind = ErrorKind::Internal;
    const std::string e = error_of([&] { target_from_json(j, "my_target.json"); }, &kind);
    EXPECT_EQ(kind, ErrorKind::Model) << e;
    return e;
  };
  EXPECT_EQ(error_of([&] { target_from_json(good, "x.json"); }), "");
  std::string e = error_with([](auto& j) { j.erase("inputs"); });
  EXPECT_NE(e.find("my_target.json: inputs: is missing"), std::string::npos) << e;
  e = error_with([](auto& j) { j["weights"]["zero_point"] = true; });
  EXPECT_NE(e.find("weights.zero_point: is not a field"), std::string::npos) << e;
  e = error_with([](auto& j) { j["inputs"]["grids"] = {"signed", "log3"}; });
  EXPECT_NE(e.find("inputs.grids[1]: \"log3\" is not a grid"), std::string::npos) << e;
  e = error_with([](auto& j) { j["gemm"][0]["max_bits"] = 11; });
  EXPECT_NE(e.find("gemm[0].max_bits: must be an integer in [2, 10]"), std::string::npos) << e;
  e = error_with([](auto& j) { j["gemm"][0]["max_bits"] = 4294967304ULL; });
  EXPECT_NE(e.find("gemm[0].max_bits"), std::string::npos) << e;
  e = error_with([](auto& j) { j["weights"]["per_channel"] = false; });
  EXPECT_NE(e.find("weights.channel_bits: needs weights.per_channel"), std::string::npos) << e;
  e = error_with([](auto& j) { j["inputs"]["per_head"] = "yes"; });
  EXPECT_NE(e.find("inputs.per_head: must be true or false"), std::string::npos) << e;
  e = error_with([](auto& j) { j["elementwise"]["gelu"] = "lut"; });
  EXPECT_NE(e.find("elementwise.gelu: must be one of fp32"), std::string::npos) << e;
  e = error_with([](auto& j) { j = nlohmann::ordered_json::array(); });
  EXPECT_NE(e.find("must be an object"), std::string::npos) << e;

  ErrorKind kind = ErrorKind::Internal;
  e = error_of([] { load_target("no-such-target"); }, &kind);
  EXPECT_EQ(kind, ErrorKind::Usage);
  EXPECT_NE(e.find("cpu-vnni, int8-only, onnx-qdq"), std::string::npos) << e;
}

TEST(Target, ThePlanRecordsItsTargetAndChecksIt) {
  QuantPlan p;
  p.method = "test";
  p.sites["blocks.0.attn.qkv"] = site(op(8), op(8));
  p.target = load_target("onnx-qdq").json;
  const nlohmann::ordered_json j = plan_to_json(p);
  EXPECT_EQ(j["target"]["name"], "onnx-qdq");
  EXPECT_TRUE(plan_from_json(j, "plan.json") == p);
  nlohmann::ordered_json bad = j;
  bad["target"].erase("name");
  const std::string e = error_of([&] { plan_from_json(bad, "plan.json"); });
  EXPECT_NE(e.find("plan.json: target: name: is missing"), std::string::npos) << e;
  QuantPlan none = p;
  none.target = nullptr;
  EXPECT_FALSE(plan_to_json(none).contains("target"));
}

}  // namespace
}  // namespace vitq
