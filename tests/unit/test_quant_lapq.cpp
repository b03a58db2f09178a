// LAPQ (Nahshan et al. 2019): the Lp-norm initialisation against a brute-force search, the KL
// loss against a direct computation, and the joint step on a tiny random-weight ViT: it never
// ends above its initialisation's loss, and the loss it reports is the loss of the plan it
// leaves, recomputed independently here.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "engine/vit_forward.h"
#include "model/vit_model.h"
#include "quant/calibrate.h"
#include "quant/method.h"
#include "quant/methods/lapq.h"
#include "quant/simulate.h"
#include "tiny_model_util.h"

namespace vitq {
namespace {

TEST(Lapq, LpStepsMatchABruteForceSearch) {
  std::mt19937_64 rng(9);
  std::student_t_distribution<double> td(4.0);  // heavy-tailed, like activations
  std::vector<float> v(20000);
  for (auto& x : v) x = float(0.3 * td(rng));
  const std::vector<double> ps = {2, 2.5, 3, 4};
  for (int bits : {3, 4, 6}) {
    const QRange r = qrange(bits);
    const std::vector<float> steps = lp_optimal_steps(v.data(), v.size(), r, ps);
    const float d0 = max_step(max_abs(v.data(), v.size()), r);
    for (size_t j = 0; j < ps.size(); ++j) {
      double best = INFINITY;
      for (int i = 1; i <= 2000; ++i) best = std::min(best, lp_error(v.data(), v.size(), float(d0 * i / 2000.0), r, ps[j]));
      const double got = lp_error(v.data(), v.size(), steps[j], r, ps[j]);
      EXPECT_LE(got, best * 1.002) << "bits " << bits << " p " << ps[j];
    }
    // Larger p weighs the large errors (clipping) more: the step grows with p.
    for (size_t j = 1; j < ps.size(); ++j) EXPECT_GE(steps[j], steps[j - 1] * 0.98f) << bits;
  }
}

TEST(Lapq, KlFromLogits) {
  const std::vector<float> a = {1, 2, 3, -1, 0, 0.5f}, b = {1.5f, 1, 3, 0, 0, 0};
  EXPECT_NEAR(kl_from_logits(a.data(), a.data(), 2, 3), 0.0, 1e-12);
  double want = 0;
  for (int i = 0; i < 2; ++i) {
    double za = 0, zb = 0;
    for (int j = 0; j < 3; ++j) za += std::exp(double(a[size_t(3 * i + j)])), zb += std::exp(double(b[size_t(3 * i + j)]));
    for (int j = 0; j < 3; ++j) {
      const double pa = std::exp(double(a[size_t(3 * i + j)])) / za, pb = std::exp(double(b[size_t(3 * i + j)])) / zb;
      want += pa * std::log(pa / pb);
    }
  }
  EXPECT_NEAR(kl_from_logits(a.data(), b.data(), 2, 3), want / 2, 1e-12);
}

// A tiny ViT with random weights: 8x8 images, 4x4 patches, dim 16, 2 blocks, 2 heads, 5 classes.
double plan_loss(const ViTModel& m, const std::vector<float>& images, int n, const QuantPlan& plan) {
  ViTForward fwd(m);
  const int C = m.cfg.num_classes;
  std::vector<float> fp(size_t(n) * C), q(size_t(n) * C);
  fwd.run(images.data(), n, fp.data());
  PlanSimulator sim(m, plan);
  fwd.run(images.data(), n, q.data(), &sim);
  double total = 0;  // independent KL: softmax in double, then Σ p log(p / q)
  for (int i = 0; i < n; ++i) {
    double za = 0, zb = 0;
    for (int j = 0; j < C; ++j) za += std::exp(double(fp[size_t(i * C + j)])), zb += std::exp(double(q[size_t(i * C + j)]));
    for (int j = 0; j < C; ++j) {
      const double pa = std::exp(double(fp[size_t(i * C + j)])) / za, pb = std::exp(double(q[size_t(i * C + j)])) / zb;
      total += pa * std::log(pa / pb);
    }
  }
  return total / n;
}

TEST(Lapq, JointStepNeverEndsAboveItsInitialisation) {
  const test::SingleThreadScope one_thread;
  const ViTModel m = test::tiny_model(21);
  const int n = 24;
  std::vector<float> images(size_t(n) * 3 * 8 * 8);
  std::mt19937_64 rng(22);
  std::normal_distribution<float> nd(0, 1);
  for (auto& v : images) v = nd(rng);
  for (int bits : {3, 4}) {
    MethodConfig cfg;
    LapqOptions& a = cfg.get<LapqOptions>("lapq");
    a.evals = 130;      // 5 p + two blocks of 14 and 12 steps (30 + 26 needed) + a second sweep
    a.loss_images = 0;  // all
    std::unique_ptr<Method> method = make_method("lapq", cfg);
    Calibrator cal(m, images.data(), n);
    CalibOptions opt;
    opt.bits = {bits, bits};
    opt.batch = 8;
    const CalibrationResult r = cal.run(*method, opt);
    const auto& notes = r.refine_notes;
    ASSERT_TRUE(notes.contains("final_loss")) << notes.dump();
    const double init = notes["init_loss"], fin = notes["final_loss"];
    double min_p = INFINITY;
    for (const auto& [p, l] : notes["p_losses"].items()) min_p = std::min(min_p, l.get<double>());
    EXPECT_EQ(init, min_p);  // the initialisation is the best p
    EXPECT_LE(fin, init) << "bits " << bits;
    EXPECT_LT(fin, init) << "bits " << bits << ": the joint step should find something on this model";
    EXPECT_LE(int(notes["evaluations"]), a.evals);
    EXPECT_EQ(notes["loss_curve"].size(), size_t(notes["evaluations"]));
    double curve_min = INFINITY;
    for (const auto& l : notes["loss_curve"]) curve_min = std::min(curve_min, l.get<double>());
    EXPECT_EQ(fin, curve_min);
    // The plan left behind has that loss (recomputed independently: one full forward of all
    // images; float sums in another order than LAPQ's batches of 8, hence not bit-exact).
    EXPECT_NEAR(plan_loss(m, images, n, r.plan), fin, 1e-6 * fin) << "bits " << bits;
  }
  // Per-token Q and K (--per-token-qk): their rows' steps are found at run time, so the joint step
  // has no variable for them and leaves their entries without a step; the rest as above.
  MethodConfig cfg;
  cfg.get<LapqOptions>("lapq").evals = 60;
  cfg.get<LapqOptions>("lapq").loss_images = 0;
  std::unique_ptr<Method> method = make_method("lapq", cfg);
  Calibrator cal(m, images.data(), n);
  CalibOptions opt;
  opt.bits = {4, 4};
  opt.batch = 8;
  opt.grids.per_token_qk = true;
  const CalibrationResult r = cal.run(*method, opt);
  for (const auto& [name, sp] : r.plan.sites)
    if (name.find("matmul_qk") != std::string::npos) {
      EXPECT_TRUE(sp.x.per_token && sp.w.per_token) << name;
      EXPECT_EQ(sp.x.scale, 0.0f) << name;
      EXPECT_EQ(sp.w.scale, 0.0f) << name;
    }
  const double fin = r.refine_notes["final_loss"];
  EXPECT_LE(fin, double(r.refine_notes["init_loss"]));
  EXPECT_NEAR(plan_loss(m, images, n, r.plan), fin, 1e-6 * fin);
}

}  // namespace
}  // namespace vitq
