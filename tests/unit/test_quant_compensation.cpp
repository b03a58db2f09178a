// QwT error compensation (quant/compensation.h): what the forward does with a block's map
// (written out here as a scalar product), the plan's companion file, and the calibration step
// measured on images it was not fitted on.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>
#include <vector>

#include "core/error.h"
#include "engine/vit_forward.h"
#include "quant/plan_transforms.h"
#include "quant/simulate.h"
#include "runtime_test_util.h"

namespace vitq {
namespace {

BlockCompensation random_compensation(int D, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0, 0.1f);
  BlockCompensation c;
  c.w.resize(size_t(D) * D);
  c.b.resize(size_t(D));
  for (auto& v : c.w) v = nd(rng);
  for (auto& v : c.b) v = nd(rng);
  return c;
}

TEST(Compensation, TheForwardAddsTheMapOfTheBlockInputToItsOutput) {
  const std::string dir = test::tmp_dir("comp_fwd");
  const ViTModel m = test::write_tiny_checkpoint(dir, {}, 5);
  const ViTConfig& c = m.cfg;
  const int B = 2, T = c.tokens(), D = c.embed_dim;
  QuantPlan plan;
  plan.compensation[1] = random_compensation(D, 9);
  std::unique_ptr<ViTModel> holder;
  const ViTModel& mc = apply_plan_transforms(m, plan, holder, "test");
  ASSERT_TRUE(mc.blocks[1].has_compensation());
  ASSERT_FALSE(mc.blocks[0].has_compensation());
  const std::vector<float> img = test::random_images(c, B, 3);
  for (FpGemm g : {FpGemm::Packed, FpGemm::PerCall}) {
    ViTForward plain(m, g), comp(mc, g);
    std::vector<float> x(size_t(B) * T * D);
    plain.embed(img.data(), B, x.data());
    plain.block(0, x.data(), B);
    std::vector<float> y0 = x, y1 = x;
    plain.block(1, y0.data(), B);
    comp.block(1, y1.data(), B);
    const BlockCompensation& bc = plan.compensation.at(1);
    for (int r = 0; r < B * T; ++r)
      for (int o = 0; o < D; ++o) {
        double want = bc.b[size_t(o)];
        for (int k = 0; k < D; ++k) want += double(x[size_t(r) * D + size_t(k)]) * bc.w[size_t(o) * D + size_t(k)];
        const size_t i = size_t(r) * D + size_t(o);
        EXPECT_NEAR(y1[i] - y0[i], want, 1e-4 * (1 + std::fabs(want))) << "row " << r << " channel " << o;
      }
  }
  std::filesystem::remove_all(dir);
}

TEST(Compensation, PlanCompanionFileRoundTripsAndIsChecked) {
  const std::string dir = test::tmp_dir("comp_plan");
  std::filesystem::create_directories(dir);
  QuantPlan p;
  p.method = "minmax";
  p.tool_version = "test";
  p.architecture = "vit_test_tiny";
  p.compensation[0] = random_compensation(4, 1);
  p.compensation[3] = random_compensation(4, 2);
  const std::string path = dir + "/plan.json";
  save_plan(p, path);
  EXPECT_EQ(plan_to_json(p)["format_version"], 3);
  EXPECT_TRUE(std::filesystem::exists(dir + "/plan_compensation.safetensors"));
  const QuantPlan q = load_plan(path);
  EXPECT_EQ(q.compensation, p.compensation);
  EXPECT_TRUE(q == p);

  auto expect_error = [&](const std::string& needle) {
    try {
      load_plan(path);
      ADD_FAILURE() << "accepted; expected " << needle;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Model);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  // Tensors written from a changed plan, the JSON (and its hash) from the original.
  QuantPlan changed = p;
  changed.compensation[3].w[5] += 1.0f;
  save_plan(changed, path);
  std::ofstream(path) << plan_to_json(p).dump(1) << "\n";
  expect_error("does not match");
  // A block the JSON does not list.
  QuantPlan more = p;
  more.compensation[1] = random_compensation(4, 3);
  save_plan(more, path);
  std::ofstream(path) << plan_to_json(p).dump(1) << "\n";
  expect_error("is not the compensation of a block listed");
  // A block listed but absent.
  QuantPlan fewer = p;
  fewer.compensation.erase(0);
  save_plan(fewer, path);
  std::ofstream(path) << plan_to_json(p).dump(1) << "\n";
  expect_error("no tensor 'blocks.0.compensation.weight'");
  std::filesystem::remove(dir + "/plan_compensation.safetensors");
  EXPECT_THROW(load_plan(path), Error);
  // A plan for a model with a different width or depth.
  ViTConfig cfg;
  cfg.embed_dim = 8;
  cfg.depth = 4;
  EXPECT_THROW(check_plan_matches(p, cfg, "plan.json"), Error);
  cfg.embed_dim = 4;
  cfg.depth = 3;
  EXPECT_THROW(check_plan_matches(p, cfg, "plan.json"), Error);
  std::filesystem::remove_all(dir);
}

// Mean squared difference of the plan's simulated logits from the FP model's, on `n` images.
double logit_error(const ViTModel& m, const QuantPlan& plan, const std::vector<float>& img, int n) {
  std::unique_ptr<ViTModel> holder;
  const ViTModel& mp = apply_plan_transforms(m, plan, holder, "test");
  const int NC = m.cfg.num_classes;
  std::vector<float> fp(size_t(n) * NC), q(fp.size());
  ViTForward(m).run(img.data(), n, fp.data());
  PlanSimulator sim(mp, plan);
  ViTForward(mp).run(img.data(), n, q.data(), &sim);
  double e = 0;
  for (size_t i = 0; i < fp.size(); ++i) e += double(fp[i] - q[i]) * (fp[i] - q[i]);
  return e / double(fp.size());
}

TEST(Compensation, CalibrationLowersTheErrorOnImagesItDidNotSee) {
  const std::string dir = test::tmp_dir("comp_cal");
  test::TinyDims dims;
  dims.depth = 3;
  const ViTModel m = test::write_tiny_checkpoint(dir, dims, 21);
  const int n_cal = 48, n_test = 32;
  const std::vector<float> cal = test::random_images(m.cfg, n_cal, 1), held = test::random_images(m.cfg, n_test, 2);
  for (int bits : {4, 6}) {
    SCOPED_TRACE(bits);
    Calibrator c(m, cal.data(), n_cal);
    MethodConfig mc;
    mc.get<MinmaxOptions>("minmax").per_channel_weights = true;
    auto method = make_method("minmax", mc);
    CalibOptions opt;
    opt.bits = {bits, bits};
    opt.batch = 16;
    opt.compensation.on = true;
    const CalibrationResult r = c.run(*method, opt);
    EXPECT_EQ(r.plan.settings["compensation"]["method"], "qwt");
    ASSERT_EQ(r.plan.compensation.size(), size_t(dims.depth));
    for (int b = 0; b < dims.depth; ++b) {
      const auto& n = r.block_notes[cat("blocks.", b)]["compensation"];
      EXPECT_GT(n["r2"].get<double>(), 0.0);
      EXPECT_LT(n["rel_error_after"].get<double>(), n["rel_error_before"].get<double>());
    }
    QuantPlan without = r.plan;
    without.compensation.clear();
    const double e_with = logit_error(m, r.plan, held, n_test), e_without = logit_error(m, without, held, n_test);
    EXPECT_LT(e_with, e_without) << "held-out logit MSE " << e_with << " with, " << e_without << " without";
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace vitq
