// Block reconstruction (quant/reconstruct.h) on a tiny random model: the trained block's output
// error falls on its calibration images and on images it did not see, the result is plain plan
// data (codes on their grids, bias corrections) that the simulator runs, and the step is
// deterministic. The gradients themselves are compared with torch.autograd in
// tests/parity/test_recon.py.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <vector>

#include "core/error.h"
#include "engine/vit_forward.h"
#include "quant/simulate.h"
#include "runtime_test_util.h"

namespace vitq {
namespace {

// mean((block_Q(x) − block_FP(x_fp))²) of block `blk` over n images, with x the partly quantized
// model's block input and x_fp the FP model's (the reconstruction's target), under `plan`.
double block_error(const ViTModel& m, const QuantPlan& plan, const std::vector<float>& img, int n, int blk) {
  const ViTConfig& c = m.cfg;
  const size_t per = size_t(c.tokens()) * c.embed_dim;
  std::vector<float> xq(size_t(n) * per), xf(xq.size());
  PlanSimulator sim(m, plan);
  ViTForward fq(m), ff(m);
  fq.embed(img.data(), n, xq.data(), &sim);
  ff.embed(img.data(), n, xf.data());
  for (int i = 0; i <= blk; ++i) {
    fq.block(i, xq.data(), n, &sim);
    ff.block(i, xf.data(), n);
  }
  double e = 0;
  for (size_t i = 0; i < xq.size(); ++i) e += double(xq[i] - xf[i]) * (xq[i] - xf[i]);
  return e / double(xq.size());
}

TEST(Reconstruction, LowersTheBlockErrorOnImagesItDidNotSee) {
  const std::string dir = test::tmp_dir("recon");
  const ViTModel m = test::write_tiny_checkpoint(dir, {}, 13);
  const int n_cal = 32, n_test = 32;
  const std::vector<float> cal = test::random_images(m.cfg, n_cal, 4), held = test::random_images(m.cfg, n_test, 5);
  MethodConfig mc;
  mc.get<MinmaxOptions>("minmax").per_channel_weights = true;
  CalibOptions opt;
  opt.bits = {4, 4};
  opt.grids.per_token = true;
  opt.batch = 8;
  auto plan_of = [&](int iters) {
    CalibOptions o = opt;
    o.recon.iters = iters;
    o.recon.batch = 4;
    o.recon.lr = 0.05;
    Calibrator c(m, cal.data(), n_cal);
    auto method = make_method("minmax", mc);
    return c.run(*method, o);
  };
  const CalibrationResult base = plan_of(0), rec = plan_of(150), again = plan_of(150);
  EXPECT_TRUE(rec.plan == again.plan) << "not deterministic";
  EXPECT_EQ(rec.plan.settings["reconstruction"]["iters"], 150);
  for (int b = 0; b < m.cfg.depth; ++b) {
    SCOPED_TRACE(b);
    const auto& n = rec.block_notes[cat("blocks.", b)]["reconstruction"];
    EXPECT_LT(n["loss_after"].get<double>(), 0.95 * n["loss_before"].get<double>());
    EXPECT_GT(n["codes_changed"].get<double>(), 0.0);
    // Plain plan data: codes on each channel's grid, a bias correction per channel.
    for (const char* s : {"attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"}) {
      const SitePlan& sp = rec.plan.sites.at(cat("blocks.", b, ".", s));
      ASSERT_TRUE(sp.has_weight_codes());
      EXPECT_EQ(sp.bias_correction.size(), sp.w.channel_scales.size());
      const QRange r = sp.w.range();
      for (int16_t q : sp.weight_codes) {
        ASSERT_GE(q, r.lo);
        ASSERT_LE(q, r.hi);
      }
    }
  }
  const int last = m.cfg.depth - 1;
  const double e_base = block_error(m, base.plan, held, n_test, last), e_rec = block_error(m, rec.plan, held, n_test, last);
  EXPECT_LT(e_rec, 0.9 * e_base) << "held-out error of the last block's output: " << e_rec << " vs " << e_base;
  std::filesystem::remove_all(dir);
}

// --recon-head-share: the loss is (1 − s)·mean over every element + s·mean over the prefix
// (class) token's elements, checked against the block output computed by the simulator's forward.
TEST(Reconstruction, HeadShareWeightsTheClassToken) {
  const std::string dir = test::tmp_dir("recon_head");
  const ViTModel m = test::write_tiny_checkpoint(dir, {}, 21);
  const ViTConfig& c = m.cfg;
  const int n = 6, T = c.tokens(), D = c.embed_dim, P = c.num_prefix_tokens(), last = c.depth - 1;
  const std::vector<float> img = test::random_images(c, n, 8);
  const QuantPlan plan = test::minmax_w4a4_token_plan(m, img, n);
  // The last block's input in the quantized model, its output there, and a target near it.
  const auto [x, out] = test::quantized_block_io(m, plan, img, n, last);
  std::vector<float> y(out.size());
  for (size_t i = 0; i < y.size(); ++i) y[i] = out[i] + 0.1f * std::sin(float(i) * 0.37f);
  double all = 0, pre = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    const double d = double(out[i]) - y[i];
    all += d * d;
    if (int(i / size_t(D)) % T < P) pre += d * d;
  }
  all /= double(y.size());
  pre /= double(n) * P * D;
  ASSERT_GT(std::abs(all - pre), 1e-3 * all) << "the class token's error must differ from the mean for this test";
  PlanSimulator s2(m, plan);
  BlockGrads g1, g1b;
  const double l0 = block_loss_and_grads(m, s2, plan, last, x.data(), y.data(), n, nullptr, 0, 0);
  const double l1 = block_loss_and_grads(m, s2, plan, last, x.data(), y.data(), n, &g1, 0, 1);
  const double lh = block_loss_and_grads(m, s2, plan, last, x.data(), y.data(), n, nullptr, 0, 0.25);
  EXPECT_NEAR(l0, all, 1e-6 * all);
  EXPECT_NEAR(l1, pre, 1e-6 * pre);
  EXPECT_NEAR(lh, 0.75 * all + 0.25 * pre, 1e-6 * all);
  // With s = 1 the other tokens' targets do not matter: same loss, same gradients.
  std::vector<float> y2 = y;
  for (size_t i = 0; i < y2.size(); ++i)
    if (int(i / size_t(D)) % T >= P) y2[i] += 5.0f;
  const double l1b = block_loss_and_grads(m, s2, plan, last, x.data(), y2.data(), n, &g1b, 0, 1);
  EXPECT_EQ(l1, l1b);
  ASSERT_EQ(g1.dw.size(), g1b.dw.size());
  for (size_t k = 0; k < g1.dw.size(); ++k) EXPECT_EQ(g1.dw[k], g1b.dw[k]) << g1.sites[k];
  std::filesystem::remove_all(dir);
}

// W4A4 per-token calibration of `m` on n images `cal` by `method`, with 100 reconstruction steps
// that train only what `train` switches on (codes and biases frozen); none if `train` is null.
CalibrationResult reconstruct_only(const ViTModel& m, const std::vector<float>& cal, int n, Method& method,
                                   void (*train)(ReconOptions&)) {
  CalibOptions o;
  o.bits = {4, 4};
  o.grids.per_token = true;
  o.batch = 8;
  if (train) {
    o.recon.iters = 100;
    o.recon.batch = 4;
    o.recon.lr = 0;
    o.recon.bias_lr = 0;
    train(o.recon);
  }
  Calibrator c(m, cal.data(), n);
  return c.run(method, o);
}

// --recon-step-lr alone (codes and biases frozen): the gradient of the channel steps and offsets
// must lower the block loss on the calibration images (a wrong sign or scale raises it, and the
// step is then reverted, leaving the method's grid), and the trained grid is plan data.
TEST(Reconstruction, TrainsTheChannelGridAlone) {
  const std::string dir = test::tmp_dir("recon_grid");
  const ViTModel m = test::write_tiny_checkpoint(dir, {}, 17);
  const std::vector<float> cal = test::random_images(m.cfg, 32, 6);
  auto method = make_method("vitq", MethodConfig{});  // per-channel asymmetric weights: steps and offsets
  const CalibrationResult base = reconstruct_only(m, cal, 32, *method, nullptr),
                          rec = reconstruct_only(m, cal, 32, *method, [](ReconOptions& r) { r.step_lr = 0.02; });
  EXPECT_EQ(rec.plan.settings["reconstruction"]["step_lr"], 0.02);
  for (int b = 0; b < m.cfg.depth; ++b) {
    SCOPED_TRACE(b);
    const auto& n = rec.block_notes[cat("blocks.", b)]["reconstruction"];
    EXPECT_LT(n["loss_after"].get<double>(), 0.98 * n["loss_before"].get<double>());
    EXPECT_EQ(n["codes_changed"].get<double>(), 0.0);
    for (const char* s : {"attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"}) {
      const std::string name = cat("blocks.", b, ".", s);
      const SitePlan &sp = rec.plan.sites.at(name), &sp0 = base.plan.sites.at(name);
      ASSERT_EQ(sp.w.channel_scales.size(), sp0.w.channel_scales.size());
      ASSERT_EQ(sp.weight_offset.size(), sp0.weight_offset.size());
      ASSERT_FALSE(sp.weight_offset.empty());
      EXPECT_NE(sp.w.channel_scales, sp0.w.channel_scales) << name;
      EXPECT_NE(sp.weight_offset, sp0.weight_offset) << name;
      for (float d : sp.w.channel_scales) ASSERT_TRUE(std::isfinite(d) && d > 0);
    }
  }
  std::filesystem::remove_all(dir);
}

// vitq's plan with the per-head steps of Q, K and V (the attention operands on uniform grids)
// multiplied by `gain`: a deliberately poor choice for the step training to correct.
class CoarseAttentionSteps : public Method {
 public:
  explicit CoarseAttentionSteps(float gain) : inner_(make_method("vitq", MethodConfig{})), gain_(gain) {}
  std::string name() const override { return "vitq"; }
  nlohmann::ordered_json settings(const GridPolicy& g) const override { return inner_->settings(g); }
  SitePlan calibrate(const SiteObservation& obs, Bits bits, SiteNotes& notes) override {
    SitePlan sp = inner_->calibrate(obs, bits, notes);
    if (obs.shape.id.kind == SiteKind::MatmulQK || obs.shape.id.kind == SiteKind::MatmulAV)
      for (OperandQuant* q : {&sp.x, &sp.w}) {
        if (q == &sp.x && obs.shape.id.kind == SiteKind::MatmulAV) continue;  // the softmax output
        for (float& d : q->head_scales) d *= gain_;
        q->scale *= gain_;
      }
    return sp;
  }

 private:
  std::unique_ptr<Method> inner_;
  float gain_;
};

// --recon-act-lr alone (codes, biases and weight grids fixed), from Q, K, V steps 3× too coarse:
// the training must lower every block's error by ≥ 10 % and shrink the steps (the loss is the
// plan's own simulation, so a wrong sign or scale of the LSQ gradient would raise it and be
// reverted); the per-token clip ratios stay in (0, 1]. On vitq's own MSE steps it gains little
// on this tiny random model.
TEST(Reconstruction, TrainsTheActivationQuantizersAlone) {
  const std::string dir = test::tmp_dir("recon_act");
  const ViTModel m = test::write_tiny_checkpoint(dir, {}, 17);
  const std::vector<float> cal = test::random_images(m.cfg, 32, 6);
  CoarseAttentionSteps method(3.0f);
  const CalibrationResult base = reconstruct_only(m, cal, 32, method, nullptr),
                          rec = reconstruct_only(m, cal, 32, method, [](ReconOptions& r) { r.act_lr = 0.01; });
  EXPECT_EQ(rec.plan.settings["reconstruction"]["act_lr"], 0.01);
  int clips_moved = 0;
  for (int b = 0; b < m.cfg.depth; ++b) {
    SCOPED_TRACE(b);
    const auto& n = rec.block_notes[cat("blocks.", b)]["reconstruction"];
    EXPECT_LT(n["loss_after"].get<double>(), 0.9 * n["loss_before"].get<double>());
    EXPECT_EQ(n["codes_changed"].get<double>(), 0.0);
    const SitePlan &qk = rec.plan.sites.at(cat("blocks.", b, ".attn.matmul_qk")),
                   &qk0 = base.plan.sites.at(cat("blocks.", b, ".attn.matmul_qk"));
    const SitePlan &av = rec.plan.sites.at(cat("blocks.", b, ".attn.matmul_av")),
                   &av0 = base.plan.sites.at(cat("blocks.", b, ".attn.matmul_av"));
    if (b == 0) {
      EXPECT_EQ(av.x, av0.x);  // the softmax output's grid is not trained (later blocks see other inputs)
    }
    for (auto [q, q0] : {std::pair{&qk.x, &qk0.x}, {&qk.w, &qk0.w}, {&av.w, &av0.w}}) {
      ASSERT_TRUE(q0->per_head());
      ASSERT_EQ(q->head_scales.size(), q0->head_scales.size());
      double mean_ratio = 0;
      for (size_t h = 0; h < q->head_scales.size(); ++h) {
        ASSERT_TRUE(std::isfinite(q->head_scales[h]) && q->head_scales[h] > 0);
        mean_ratio += q->head_scales[h] / q0->head_scales[h] / double(q->head_scales.size());
      }
      EXPECT_LT(mean_ratio, 0.9);
      EXPECT_EQ(q->scale, *std::max_element(q->head_scales.begin(), q->head_scales.end()));
    }
    // The per-token inputs' clip ratios: start at 1, stay in (0, 1], and some move.
    for (const char* site : {"attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"}) {
      const OperandQuant& x = rec.plan.sites.at(cat("blocks.", b, ".", site)).x;
      ASSERT_TRUE(x.per_token) << site;
      EXPECT_TRUE(x.token_clip > 0.5f && x.token_clip <= 1.0f) << site << " " << x.token_clip;
      clips_moved += x.token_clip < 1.0f;
    }
  }
  EXPECT_GT(clips_moved, 0);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace vitq
