// LayerNorm rewrites (--smooth-ln, --ln-center): the rewrite keeps the FP function, its factors
// move the range of each post-LN channel into the weights as SmoothQuant's formula says, and its
// shifts centre each channel on the calibration images.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <random>

#include "core/error.h"
#include "engine/vit_forward.h"
#include "quant/ln_smoothing.h"
#include "runtime_test_util.h"

namespace vitq {
namespace {

std::string tmp_dir(const std::string& name) { return test::tmp_dir("smooth_" + name); }

// Per-channel max |x| of every qkv / fc1 input (an independent copy of what the factors need).
struct InputMax : SiteHook {
  std::map<std::string, std::vector<double>> m;
  void observe(const SiteCall& c) override {
    if (c.site.kind != SiteKind::Qkv && c.site.kind != SiteKind::Fc1) return;
    auto& v = m[c.site.name()];
    v.resize(size_t(c.K), 0.0);
    for (int64_t r = 0; r < int64_t(c.groups) * c.M; ++r)
      for (int k = 0; k < c.K; ++k) v[size_t(k)] = std::max(v[size_t(k)], std::fabs(double(c.x[r * c.K + k])));
  }
};

std::vector<double> weight_column_max(const ViTModel& m, const std::string& site) {
  SiteId id;
  EXPECT_TRUE(parse_site_name(site, &id));
  const LinearWeights* lw = site_weights(m, id);
  std::vector<double> v(size_t(lw->in()), 0.0);
  for (int r = 0; r < lw->out(); ++r)
    for (int k = 0; k < lw->in(); ++k)
      v[size_t(k)] = std::max(v[size_t(k)], std::fabs(double(lw->w.ptr()[size_t(r) * lw->in() + k])));
  return v;
}

std::vector<float> logits(const ViTModel& m, const std::vector<float>& x, int n, SiteHook* hook = nullptr) {
  std::vector<float> out(size_t(n) * size_t(m.cfg.num_classes));
  ViTForward f(m);
  f.run(x.data(), n, out.data(), hook);
  return out;
}

TEST(LnSmoothing, RewriteKeepsTheFpFunction) {
  const std::string dir = tmp_dir("fn");
  test::TinyDims d;
  d.depth = 3;
  const ViTModel m = test::write_tiny_checkpoint(dir, d, 5);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(std::log(0.1f), std::log(10.0f));
  std::map<std::string, std::vector<float>> f;
  for (int b = 0; b < d.depth; ++b) {
    for (const char* s : {".attn.qkv", ".mlp.fc1"}) {
      std::vector<float> v(size_t(d.dim));
      for (auto& e : v) e = std::exp(u(rng));
      f["blocks." + std::to_string(b) + s] = v;
    }
  }
  const ViTModel sm = apply_ln_smoothing(m, f, "test");
  const std::vector<float> x = test::random_images(m.cfg, 4, 11);
  const std::vector<float> a = logits(m, x, 4), b = logits(sm, x, 4);
  float mx = 0;
  for (float v : a) mx = std::max(mx, std::fabs(v));
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-4f * mx) << i;
  // The rewrite really changed the layers (not a no-op).
  EXPECT_NE(sm.blocks[0].norm1.gamma.data[0], m.blocks[0].norm1.gamma.data[0]);
  std::filesystem::remove_all(dir);
}

// Per-channel min and max of every qkv / fc1 input.
struct InputRange : SiteHook {
  std::map<std::string, std::pair<std::vector<double>, std::vector<double>>> r;
  void observe(const SiteCall& c) override {
    if (c.site.kind != SiteKind::Qkv && c.site.kind != SiteKind::Fc1) return;
    auto& [lo, hi] = r[c.site.name()];
    lo.resize(size_t(c.K), 1e300);
    hi.resize(size_t(c.K), -1e300);
    for (int64_t row = 0; row < int64_t(c.groups) * c.M; ++row)
      for (int k = 0; k < c.K; ++k) {
        lo[size_t(k)] = std::min(lo[size_t(k)], double(c.x[row * c.K + k]));
        hi[size_t(k)] = std::max(hi[size_t(k)], double(c.x[row * c.K + k]));
      }
  }
};

TEST(LnSmoothing, ShiftsAndFactorsTogetherKeepTheFpFunction) {
  const std::string dir = tmp_dir("shiftfn");
  test::TinyDims d;
  d.depth = 2;
  const ViTModel m = test::write_tiny_checkpoint(dir, d, 8);
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> u(std::log(0.2f), std::log(5.0f)), sh(-2.0f, 2.0f);
  SiteVectors f, mu;
  for (int b = 0; b < d.depth; ++b)
    for (const char* s : {".attn.qkv", ".mlp.fc1"}) {
      std::vector<float> v(size_t(d.dim)), w(size_t(d.dim));
      for (auto& e : v) e = std::exp(u(rng));
      for (auto& e : w) e = sh(rng);
      f["blocks." + std::to_string(b) + s] = v;
      mu["blocks." + std::to_string(b) + s] = w;
    }
  const ViTModel r = apply_ln_rewrite(m, f, mu, "test");
  const std::vector<float> x = test::random_images(m.cfg, 3, 12);
  const std::vector<float> a = logits(m, x, 3), b = logits(r, x, 3);
  float mx = 0;
  for (float v : a) mx = std::max(mx, std::fabs(v));
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-4f * mx) << i;
  EXPECT_NE(r.blocks[1].qkv.b.data[0], m.blocks[1].qkv.b.data[0]) << "the shift did not reach the bias";
  std::filesystem::remove_all(dir);
}

TEST(LnSmoothing, CentringCentresEveryChannelOnTheCalibrationImages) {
  const std::string dir = tmp_dir("center");
  const ViTModel m = test::write_tiny_checkpoint(dir, {}, 9);
  const int n = 5;
  const std::vector<float> x = test::random_images(m.cfg, n, 22);
  const LnRewrite rw = fit_ln_rewrite(m, x.data(), n, 2, -1.0, true);
  EXPECT_TRUE(rw.factors.empty());
  ASSERT_EQ(rw.shifts.size(), size_t(2 * m.cfg.depth));
  InputRange before, after;
  logits(m, x, n, &before);
  logits(apply_ln_rewrite(m, rw.factors, rw.shifts, "test"), x, n, &after);
  for (const auto& [site, lohi] : after.r) {
    const auto& [lo, hi] = lohi;
    const auto& [lo0, hi0] = before.r.at(site);
    for (size_t k = 0; k < lo.size(); ++k) {
      const double half = 0.5 * (hi0[k] - lo0[k]);
      EXPECT_NEAR(rw.shifts.at(site)[k], 0.5 * (hi0[k] + lo0[k]), 1e-5 * (1 + std::fabs(hi0[k]))) << site << " " << k;
      EXPECT_NEAR(hi[k], half, 1e-4 * (1 + half)) << site << " channel " << k;
      EXPECT_NEAR(lo[k], -half, 1e-4 * (1 + half)) << site << " channel " << k;
    }
  }
  // Recorded in the plan, saved and loaded unchanged, checked against the model.
  QuantPlan p;
  p.method = "minmax";
  p.ln_shift = rw.shifts;
  const std::string path = dir + "/plan.json";
  save_plan(p, path);
  EXPECT_TRUE(load_plan(path) == p);
  p.ln_shift["blocks.0.mlp.fc1"].pop_back();
  try {
    check_plan_matches(p, m.cfg, "plan.json");
    ADD_FAILURE() << "accepted a wrong length";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ln_shift"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

// --ln-reparam (RepQ-ViT with the median as the shared target): after the rewrite every
// post-LN channel is centred and spans ± the median of the original centred half-ranges.
TEST(LnSmoothing, ReparameterisationGivesEveryChannelTheMedianRange) {
  const std::string dir = tmp_dir("reparam");
  const ViTModel m = test::write_tiny_checkpoint(dir, {}, 9);
  const int n = 5;
  const std::vector<float> x = test::random_images(m.cfg, n, 22);
  const LnRewrite rw = fit_ln_rewrite(m, x.data(), n, 2, -1.0, false, /*reparam=*/true);
  ASSERT_EQ(rw.shifts.size(), size_t(2 * m.cfg.depth));
  ASSERT_EQ(rw.factors.size(), size_t(2 * m.cfg.depth));
  InputRange before, after;
  const std::vector<float> a = logits(m, x, n, &before);
  const ViTModel r = apply_ln_rewrite(m, rw.factors, rw.shifts, "test");
  const std::vector<float> b = logits(r, x, n, &after);
  float mx = 0;
  for (float v : a) mx = std::max(mx, std::fabs(v));
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-4f * mx) << i;  // the same FP function
  for (const auto& [site, lohi] : after.r) {
    const auto& [lo0, hi0] = before.r.at(site);
    std::vector<double> half;
    for (size_t k = 0; k < lo0.size(); ++k) half.push_back(0.5 * (hi0[k] - lo0[k]));
    std::vector<double> sorted = half;
    std::sort(sorted.begin(), sorted.end());
    const double target = sorted[sorted.size() / 2];  // (every channel has a positive range here)
    const auto& [lo, hi] = lohi;
    for (size_t k = 0; k < lo.size(); ++k) {
      EXPECT_NEAR(hi[k], target, 1e-4 * (1 + target)) << site << " channel " << k;
      EXPECT_NEAR(lo[k], -target, 1e-4 * (1 + target)) << site << " channel " << k;
    }
  }
  EXPECT_THROW(fit_ln_rewrite(m, x.data(), n, 2, 0.5, false, true), Error);  // not with --smooth-ln
  std::filesystem::remove_all(dir);
}

TEST(LnSmoothing, FactorsMoveTheRangeAsTheFormulaSays) {
  const std::string dir = tmp_dir("alpha");
  const ViTModel m = test::write_tiny_checkpoint(dir, {}, 6);
  const int n = 6;
  const std::vector<float> x = test::random_images(m.cfg, n, 21);
  for (double alpha : {0.5, 1.0, 0.0, 0.3}) {
    SCOPED_TRACE(alpha);
    const auto f = ln_smoothing_factors(m, x.data(), n, alpha, 4);
    ASSERT_EQ(f.size(), size_t(2 * m.cfg.depth));
    const ViTModel sm = apply_ln_smoothing(m, f, "test");
    InputMax before, after;
    logits(m, x, n, &before);
    logits(sm, x, n, &after);
    for (const auto& [site, xs] : after.m) {
      const std::vector<double> ws = weight_column_max(sm, site), w0 = weight_column_max(m, site);
      const std::vector<double>& x0 = before.m.at(site);
      for (size_t k = 0; k < xs.size(); ++k) {
        // s_k = max|x_k|^α / max|W_k|^(1−α), so max|x'_k| = max|x_k|^(1−α) max|W_k|^(1−α) and
        // max|W'_k| = max|x_k|^α max|W_k|^α: equal at α = 0.5, 1 for x' at α = 1, for W' at α = 0.
        const double want_x = std::pow(x0[k] * w0[k], 1.0 - alpha), want_w = std::pow(x0[k] * w0[k], alpha);
        EXPECT_NEAR(xs[k], want_x, 2e-4 * want_x) << site << " channel " << k;
        EXPECT_NEAR(ws[k], want_w, 2e-4 * want_w) << site << " channel " << k;
      }
    }
  }
  std::filesystem::remove_all(dir);
}

TEST(LnSmoothing, BadFactorsAreErrorsNamingTheSite) {
  const std::string dir = tmp_dir("bad");
  const ViTModel m = test::write_tiny_checkpoint(dir, {}, 7);
  auto expect = [&](std::map<std::string, std::vector<float>> f, const std::string& needle) {
    try {
      apply_ln_smoothing(m, f, "plan.json");
      ADD_FAILURE() << "accepted; expected " << needle;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Model);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect({{"blocks.0.attn.qkv", std::vector<float>(5, 1.0f)}}, "has 5 factors, the layer has 32");
  expect({{"blocks.0.attn.proj", std::vector<float>(32, 1.0f)}}, "not a site fed by a LayerNorm");
  expect({{"blocks.9.mlp.fc1", std::vector<float>(32, 1.0f)}}, "blocks.9.mlp.fc1");
  std::vector<float> neg(32, 1.0f);
  neg[3] = -1.0f;
  expect({{"blocks.1.mlp.fc1", neg}}, "factor 3");
  QuantPlan p;
  p.ln_smoothing["blocks.0.mlp.fc1"] = std::vector<float>(31, 1.0f);
  try {
    check_plan_matches(p, m.cfg, "plan.json");
    ADD_FAILURE() << "accepted a wrong length";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("31 factors"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace vitq
