// Plan JSON: round trip, determinism, validation.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "quant/plan.h"

namespace vitq {
namespace {

std::string slurp(const std::string& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

QuantPlan sample_plan() {
  QuantPlan p;
  p.method = "liu2021";
  p.tool_version = "0.1.0";
  p.architecture = "vit_tiny_patch16_224";
  p.settings = {{"similarity", "pearson"}, {"candidates", 100}};
  p.calibration = {{"images", 3}, {"samples", {"a.jpg", "b.jpg", "c.jpg"}}};
  SitePlan s;
  s.x = {6, false, 0.0123456789f, {}, {}};
  s.w = {6, false, 3.3e-5f, {}, {}};
  s.bias_correction = {0.1f, -1e-7f, 3.0f};
  p.sites["blocks.0.attn.qkv"] = s;
  SitePlan av;
  av.x = {8, true, 1.0f / 255, {}, {}};
  av.w = {8, false, 0.07f, {}, {}};
  p.sites["blocks.0.attn.matmul_av"] = av;
  SitePlan pc;
  pc.x = {4, false, 0.5f, {}, {}};
  pc.w = {4, false, 0.25f, {0.1f, 0.2f, 0.30000001f}, {3, 4, 8}};
  p.sites["head"] = pc;
  return p;
}

TEST(Plan, RoundTripsExactlyAndDeterministically) {
  const auto dir = std::filesystem::temp_directory_path() / "vitq_plan_test";
  std::filesystem::create_directories(dir);
  const std::string a = (dir / "a.json").string(), b = (dir / "b.json").string();
  QuantPlan p = sample_plan();
  save_plan(p, a);
  QuantPlan q = load_plan(a);
  EXPECT_TRUE(q == p);
  EXPECT_EQ(q.sites.at("blocks.0.attn.qkv").x.scale, 0.0123456789f);  // float bits survive
  EXPECT_EQ(q.sites.at("head").w.channel_scales[2], 0.30000001f);
  save_plan(q, b);
  EXPECT_EQ(slurp(a), slurp(b));
  std::filesystem::remove_all(dir);
}

TEST(Plan, InvalidPlansAreRejectedWithTheField) {
  auto expect = [](nlohmann::ordered_json j, const std::string& needle) {
    try {
      plan_from_json(j, "plan.json");
      ADD_FAILURE() << "accepted; expected error with " << needle;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Model);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  nlohmann::ordered_json good = plan_to_json(sample_plan());
  ASSERT_NO_THROW(plan_from_json(good, "plan.json"));
  auto j = good;
  j["format_version"] = 2;
  expect(j, "format_version");
  j = good;
  j["sites"]["blocks.0.attn.qkv"]["x"]["bits"] = 11;
  expect(j, "sites.blocks.0.attn.qkv.x.bits");
  j = good;
  j["sites"]["blocks.0.attn.qkv"]["w"]["scale"] = -1;
  expect(j, "sites.blocks.0.attn.qkv.w.scale");
  j = good;
  j["sites"]["blocks.0.attn.qkv"]["w"]["scale"] = 0;
  expect(j, "w.scale");
  j = good;
  j["sites"]["blocks.0.attn.foo"] = j["sites"]["blocks.0.attn.qkv"];
  expect(j, "blocks.0.attn.foo");
  j = good;
  j["sites"]["blocks.0.attn.qkv"]["x"]["bits"] = 0;
  expect(j, "both be quantized");
  j = good;
  j["sites"]["head"]["w"]["channel_bits"] = {3, 4};
  expect(j, "channel_bits");
  j = good;
  j["sites"]["blocks.0.attn.qkv"]["bias_correction"][1] = "x";
  expect(j, "bias_correction[1]");
}

}  // namespace
}  // namespace vitq
