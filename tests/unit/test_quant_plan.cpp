// Plan JSON: round trip, determinism, validation.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "model/vit_config.h"
#include "numerics/level_grid.h"
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
  s.x = {6, Grid::Signed, 0.0123456789f, {}, {}, false, {}};
  s.w = {6, Grid::Signed, 3.3e-5f, {}, {}, false, {}};
  s.bias_correction = {0.1f, -1e-7f, 3.0f};
  p.sites["blocks.0.attn.qkv"] = s;
  SitePlan av;
  av.x = {8, Grid::Unsigned, 1.0f / 255, {}, {}, false, {}};
  av.w = {8, Grid::Signed, 0.07f, {}, {}, false, {}};
  p.sites["blocks.0.attn.matmul_av"] = av;
  SitePlan pc;
  pc.x = {4, Grid::Signed, 0.5f, {}, {}, false, {}};
  pc.w = {4, Grid::Signed, 0.25f, {0.1f, 0.2f, 0.30000001f}, {3, 4, 8}, false, {}};
  p.sites["head"] = pc;
  SitePlan tok;  // per-token input, per-channel weight
  tok.x = {6, Grid::Signed, 0.0f, {}, {}, true, {}};
  tok.w = {6, Grid::Signed, 0.5f, {0.5f, 0.25f, 0.125f}, {}, false, {}};
  p.sites["blocks.1.attn.proj"] = tok;
  SitePlan lv;  // level grid softmax output, per-head V steps
  lv.x = {6, Grid::Float, kLevelStep, {}, {}, false, {}};
  lv.w = {6, Grid::Signed, 0.3f, {}, {}, false, {0.1f, 0.3f, 0.2f}};
  p.sites["blocks.1.attn.matmul_av"] = lv;
  SitePlan hq;  // per-head Q and K steps
  hq.x = {4, Grid::Signed, 0.7f, {}, {}, false, {0.5f, 0.7f, 0.6f}};
  hq.w = {4, Grid::Signed, 0.9f, {}, {}, false, {0.9f, 0.8f, 0.7f}};
  p.sites["blocks.1.attn.matmul_qk"] = hq;
  p.ln_smoothing["blocks.0.attn.qkv"] = {0.5f, 2.0f, 1.0f / 3};
  p.ln_smoothing["blocks.1.mlp.fc1"] = {7.25f, 1e-3f, 1e3f};
  p.rotation = PlanRotation{18446744073709551557ull, true, false, true};
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
  EXPECT_EQ(q.ln_smoothing.at("blocks.0.attn.qkv")[2], 1.0f / 3);
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
  j["format_version"] = 9;
  expect(j, "format_version");
  j = good;
  j["format_version"] = 1;  // a format-2 plan: accepted (the fields decide what it means)
  ASSERT_NO_THROW(plan_from_json(j, "plan.json"));
  // Format 7 with per-token inputs (their steps carry the tie-breaking stretch); without them the
  // rotation and per-head steps make it format 2; format 1 only when a format-1 reader would not
  // misread the plan.
  EXPECT_EQ(good["format_version"], 7);
  QuantPlan no_token = sample_plan();
  no_token.sites.erase("blocks.1.attn.proj");
  EXPECT_EQ(plan_to_json(no_token)["format_version"], 2);
  QuantPlan old = sample_plan();
  old.rotation.reset();
  for (const char* s : {"blocks.1.attn.proj", "blocks.1.attn.matmul_av", "blocks.1.attn.matmul_qk"}) old.sites.erase(s);
  EXPECT_EQ(plan_to_json(old)["format_version"], 1);
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
  j = good;
  j["ln_smoothing"]["blocks.0.attn.qkv"][0] = -0.5;
  expect(j, "ln_smoothing.blocks.0.attn.qkv");
  // The formats of issue 14: per-token inputs, level grids, per-head steps.
  j = good;
  j["sites"]["blocks.1.attn.proj"]["x"]["granularity"] = "row";
  expect(j, "sites.blocks.1.attn.proj.x.granularity");
  j = good;
  j["sites"]["blocks.1.attn.proj"]["x"]["scale"] = 0.5;
  expect(j, "each row has its own");
  j = good;
  j["sites"]["blocks.1.attn.proj"]["x"]["bits"] = 9;
  expect(j, "per-token quantization takes 2..8 bits");
  j = good;
  j["sites"]["blocks.1.attn.proj"]["w"]["granularity"] = "token";
  expect(j, "w.granularity");
  j = good;
  j["sites"]["blocks.1.attn.matmul_av"]["w"]["granularity"] = "token";
  expect(j, "sites.blocks.1.attn.matmul_av.w.granularity");
  j = good;
  j["sites"]["blocks.0.attn.matmul_av"]["x"]["granularity"] = "token";
  expect(j, "Q and K of matmul_qk");
  j = good;
  j["sites"]["blocks.1.attn.matmul_qk"]["x"]["granularity"] = "token";
  expect(j, "each row has its own");  // (it still has its per-tensor step)
  // Per-token Q and K of matmul_qk (symmetric rows): no step, no clip ratio or groups; format 8.
  {
    QuantPlan t = sample_plan();
    OperandQuant& qx = t.sites.at("blocks.1.attn.matmul_qk").x;
    OperandQuant& kw = t.sites.at("blocks.1.attn.matmul_qk").w;
    for (OperandQuant* o : {&qx, &kw}) o->per_token = true, o->scale = 0.0f, o->head_scales.clear();
    const nlohmann::ordered_json tj = plan_to_json(t);
    EXPECT_EQ(tj["format_version"], 8);
    EXPECT_EQ(tj["sites"]["blocks.1.attn.matmul_qk"]["w"]["granularity"], "token");
    EXPECT_TRUE(plan_from_json(tj, "plan.json") == t);
    kw.per_token = false, kw.scale = 0.5f;  // Q alone per token: still format 8
    EXPECT_EQ(plan_to_json(t)["format_version"], 8);
    j = tj;
    j["sites"]["blocks.1.attn.matmul_qk"]["x"]["token_clip"] = 0.9;
    expect(j, "Q and K rows take their max");
    j = tj;
    j["sites"]["blocks.1.attn.matmul_qk"]["w"]["token_group"] = 8;
    expect(j, "a Q or K row is one group");
    j = tj;
    j["sites"]["blocks.1.attn.matmul_qk"]["w"]["head_scales"] = {0.1, 0.2, 0.3};
    expect(j, "need a uniform grid with a stored step");
  }
  // The per-token clip ratio: (0, 1], per-token inputs only.
  for (const nlohmann::ordered_json& bad : {nlohmann::ordered_json(0.0), nlohmann::ordered_json(1.5),
                                            nlohmann::ordered_json(-0.9), nlohmann::ordered_json("0.9")}) {
    j = good;
    j["sites"]["blocks.1.attn.proj"]["x"]["token_clip"] = bad;
    expect(j, "sites.blocks.1.attn.proj.x.token_clip");
  }
  j = good;
  j["sites"]["blocks.0.attn.qkv"]["x"]["token_clip"] = 0.9;
  expect(j, "per-token inputs");
  {
    QuantPlan c = sample_plan();
    c.sites.at("blocks.1.attn.proj").x.token_clip = 0.95f;
    const nlohmann::ordered_json cj = plan_to_json(c);
    EXPECT_EQ(cj["format_version"], 7);  // per token: 7 (a clip ratio alone made it 4)
    EXPECT_EQ(cj["sites"]["blocks.1.attn.proj"]["x"]["token_clip"].get<float>(), 0.95f);
    EXPECT_TRUE(plan_from_json(cj, "plan.json") == c);
    EXPECT_FALSE(good["sites"]["blocks.1.attn.proj"]["x"].contains("token_clip"));  // 1: not written
  }
  // Per-token channel groups: a whole number >= 1, per-token inputs only, weights of at most 8
  // bits; a plan with them reads back equal.
  for (const nlohmann::ordered_json& bad : {nlohmann::ordered_json(0), nlohmann::ordered_json(-64),
                                            nlohmann::ordered_json(6.5), nlohmann::ordered_json("64")}) {
    j = good;
    j["sites"]["blocks.1.attn.proj"]["x"]["token_group"] = bad;
    expect(j, "sites.blocks.1.attn.proj.x.token_group");
  }
  j = good;
  j["sites"]["blocks.0.attn.qkv"]["x"]["token_group"] = 64;
  expect(j, "per-token inputs");
  j = good;
  j["sites"]["blocks.1.attn.proj"]["x"]["token_group"] = 64;
  j["sites"]["blocks.1.attn.proj"]["w"]["bits"] = 10;
  expect(j, "at most 8 bits");
  {
    QuantPlan c = sample_plan();
    c.sites.at("blocks.1.attn.proj").x.token_group = 64;
    const nlohmann::ordered_json cj = plan_to_json(c);
    EXPECT_EQ(cj["format_version"], 7);  // per token: 7 (groups alone made it 6)
    EXPECT_EQ(cj["sites"]["blocks.1.attn.proj"]["x"]["token_group"], 64);
    EXPECT_TRUE(plan_from_json(cj, "plan.json") == c);
    EXPECT_FALSE(good["sites"]["blocks.1.attn.proj"]["x"].contains("token_group"));  // 0: not written
    // ViT-Ti's proj has 192 inputs: 64 divides them, 50 does not.
    ViTConfig cfg;
    cfg.architecture = "vit_tiny_patch16_224";
    cfg.embed_dim = 192, cfg.depth = 2, cfg.num_heads = 3, cfg.mlp_hidden = 768;
    QuantPlan v;
    v.sites["blocks.1.attn.proj"] = c.sites.at("blocks.1.attn.proj");
    v.sites.at("blocks.1.attn.proj").w.channel_scales.assign(192, 0.5f);
    EXPECT_NO_THROW(check_plan_matches(v, cfg, "plan.json"));
    v.sites.at("blocks.1.attn.proj").x.token_group = 50;
    try {
      check_plan_matches(v, cfg, "plan.json");
      ADD_FAILURE() << "a token group that does not divide K was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("token_group 50 does not divide the 192"), std::string::npos) << e.what();
    }
  }
  j = good;
  j["sites"]["blocks.1.attn.matmul_av"]["x"]["grid"] = "log3";
  expect(j, "sites.blocks.1.attn.matmul_av.x.grid");
  j = good;
  j["sites"]["blocks.1.attn.matmul_av"]["x"]["scale"] = 0.5;
  expect(j, "fixed (2^-15)");
  j = good;
  j["sites"]["blocks.1.attn.matmul_qk"]["x"]["grid"] = "float";
  expect(j, "softmax output");
  j = good;
  j["sites"]["blocks.1.attn.matmul_av"]["w"]["grid"] = "log2";
  j["sites"]["blocks.1.attn.matmul_av"]["w"].erase("scale");
  j["sites"]["blocks.1.attn.matmul_av"]["w"].erase("head_scales");
  expect(j, "w.grid");
  j = good;
  j["sites"]["blocks.1.attn.matmul_av"]["x"]["unsigned"] = true;
  expect(j, "contradicts");
  j = good;
  j["sites"]["blocks.1.attn.matmul_qk"]["w"]["head_scales"][1] = 0;
  expect(j, "w.head_scales[1]");
  j = good;
  j["sites"]["blocks.1.attn.proj"]["w"]["head_scales"] = {1.0};
  expect(j, "attention sites only");
  j = good;
  j["rotation"]["seed"] = -1;
  expect(j, "rotation.seed");
  j = good;
  j["rotation"]["mlp"] = 1;
  expect(j, "rotation.mlp");
  j = good;
  j["rotation"]["angle"] = 0.5;
  expect(j, "rotation.angle");
  j = good;
  j["rotation"] = {{"residual", false}, {"heads", false}, {"mlp", false}};
  expect(j, "rotates something");
  j = good;
  j["ln_smoothing"]["blocks.1.mlp.fc1"][1] = 0;
  expect(j, "positive and finite");
  j = good;
  j["ln_smoothing"]["blocks.0.attn.proj"] = {1.0, 2.0};
  expect(j, "not a site fed by a LayerNorm");
  j = good;
  j["ln_smoothing"] = {1.0, 2.0};
  expect(j, "ln_smoothing");
}

// A plan with the fields of ACIQ and Bit-Split: per-channel bits, weight offsets and codes.
QuantPlan coded_plan() {
  QuantPlan p = sample_plan();
  SitePlan& h = p.sites.at("head");  // 3 channels, K = 4
  h.weight_offset = {0.5f, -0.25f, 1e-8f};
  h.weight_codes = {-4, 3, 0, 1, 7, -8, 2, 2, 127, -128, 0, -1};  // channel bits 3, 4, 8
  SitePlan fc;
  fc.x = {4, Grid::Signed, 0.1f, {}, {}, false, {}};
  fc.w = {4, Grid::Signed, 0.2f, {0.2f, 0.1f}, {}, false, {}};
  fc.weight_codes = {-7, 7, 0, 1, 2, 3};
  p.sites["blocks.1.mlp.fc1"] = fc;
  return p;
}

TEST(Plan, WeightCodesAndOffsetsRoundTripThroughTheCompanionFile) {
  const auto dir = std::filesystem::temp_directory_path() / "vitq_plan_codes_test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string a = (dir / "plan.json").string();
  const QuantPlan p = coded_plan();
  save_plan(p, a);
  ASSERT_TRUE(std::filesystem::exists(dir / "plan_codes.safetensors"));
  const std::string text = slurp(a);
  EXPECT_EQ(text.find("-128"), std::string::npos) << "codes must not be in the JSON";
  const QuantPlan q = load_plan(a);
  EXPECT_TRUE(q == p);
  EXPECT_EQ(q.sites.at("head").weight_codes, p.sites.at("head").weight_codes);
  EXPECT_EQ(q.sites.at("head").weight_offset[2], 1e-8f);
  // Deterministic bytes, for both files.
  const std::string codes1 = slurp((dir / "plan_codes.safetensors").string());
  save_plan(q, a);
  EXPECT_EQ(slurp(a), text);
  EXPECT_EQ(slurp((dir / "plan_codes.safetensors").string()), codes1);
  // Another name: its own companion file.
  save_plan(q, (dir / "other.json").string());
  EXPECT_TRUE(std::filesystem::exists(dir / "other_codes.safetensors"));

  auto load_error = [&](const QuantPlan& bad_codes, const std::string& needle) {
    // Codes written from `bad_codes`, JSON (and its hash) from the good plan.
    save_plan(bad_codes, a);
    std::ofstream(a) << plan_to_json(p).dump(1) << "\n";
    try {
      load_plan(a);
      ADD_FAILURE() << "accepted; expected " << needle;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Model);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  QuantPlan changed = p;
  changed.sites.at("blocks.1.mlp.fc1").weight_codes[0] = -6;
  load_error(changed, "do not match");
  QuantPlan out_of_grid = p;
  out_of_grid.sites.at("head").weight_codes[0] = -5;  // channel 0 has 3 bits: [-4, 3]
  load_error(out_of_grid, "outside its grid");
  std::filesystem::remove(dir / "plan_codes.safetensors");
  std::ofstream(a) << plan_to_json(p).dump(1) << "\n";
  EXPECT_THROW(load_plan(a), Error);  // the companion file is gone
  std::filesystem::remove_all(dir);
}

TEST(Plan, WeightOffsetAndCodesAreValidated) {
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
  auto j = good;
  j["sites"]["blocks.0.attn.matmul_av"]["weight_offset"] = {1.0};
  expect(j, "sites.blocks.0.attn.matmul_av.weight_offset");
  j = good;
  j["sites"]["head"]["weight_offset"] = {1.0, 2.0};
  expect(j, "one entry per channel");
  j = good;
  j["sites"]["blocks.0.attn.qkv"]["weight_codes"] = true;
  expect(j, "need w.channel_scales");
  j = good;
  j["sites"]["head"]["weight_codes"] = true;
  expect(j, "weight_codes: is missing");
}

}  // namespace
}  // namespace vitq
