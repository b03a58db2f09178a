// The reconstruction's Fisher token weights (quant/fisher_tokens.h) and the network backward they
// use (synth/vit_input_grad.h): the gradient at every block's output and the MLP rotation's
// backward against central finite differences of the engine's forward; the sampled estimate
// against the exact expectation over the tiny model's 7 classes; and the reconstruction loss with
// the weights against the weighted mean computed here from the simulator's block output.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>
#include <vector>

#include "engine/vit_forward.h"
#include "quant/fisher_tokens.h"
#include "quant/reconstruct.h"
#include "quant/rotation.h"
#include "quant/simulate.h"
#include "runtime_test_util.h"
#include "synth/vit_input_grad.h"

namespace vitq {
namespace {

// Σ c·logits of the engine's forward continued from block `from`'s input x (n images).
double logit_dot(const ViTModel& m, std::vector<float> x, int from, int n, const std::vector<float>& c) {
  ViTForward f(m);
  for (int i = from; i < m.cfg.depth; ++i) f.block(i, x.data(), n);
  std::vector<float> logits(size_t(n) * m.cfg.num_classes);
  f.head(x.data(), n, logits.data());
  double s = 0;
  for (size_t i = 0; i < logits.size(); ++i) s += double(c[i]) * logits[i];
  return s;
}

// ∂(c·logits)/∂(block i's output) from ViTInputGrad against central differences along random
// directions, for every block.
void check_block_output_grads(const ViTModel& m) {
  const ViTConfig& c = m.cfg;
  const int n = 2, T = c.tokens(), D = c.embed_dim;
  const std::vector<float> img = test::random_images(c, n, 3);
  std::mt19937_64 rng(11);
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> dl(size_t(n) * c.num_classes);
  for (float& v : dl) v = nd(rng);
  ViTInputGrad g(m);
  std::vector<float> logits(dl.size());
  g.forward(img.data(), n, logits.data());
  std::vector<std::vector<float>> at(size_t(c.depth));
  int calls = 0;
  g.backward(dl.data(), std::vector<const float*>(size_t(g.layers()), nullptr), nullptr, [&](int i, const float* gr) {
    at[size_t(i)].assign(gr, gr + size_t(n) * T * D);
    ++calls;
  });
  ASSERT_EQ(calls, c.depth);
  // Block i's output: the stream after blocks 0..i of the forward.
  ViTForward f(m);
  std::vector<float> x(size_t(n) * T * D);
  f.embed(img.data(), n, x.data());
  for (int i = 0; i < c.depth; ++i) {
    SCOPED_TRACE(i);
    f.block(i, x.data(), n);
    for (int dir = 0; dir < 3; ++dir) {
      std::vector<float> v(x.size());
      for (float& e : v) e = nd(rng);
      const float eps = 1e-2f;
      std::vector<float> xp = x, xm = x;
      for (size_t e = 0; e < x.size(); ++e) xp[e] += eps * v[e], xm[e] -= eps * v[e];
      const double fd = (logit_dot(m, xp, i + 1, n, dl) - logit_dot(m, xm, i + 1, n, dl)) / (2.0 * eps);
      double an = 0, scale = 0;
      for (size_t e = 0; e < x.size(); ++e) an += double(at[size_t(i)][e]) * v[e], scale += std::fabs(at[size_t(i)][e] * v[e]);
      EXPECT_NEAR(an, fd, 2e-3 * scale + 1e-5) << "direction " << dir;
    }
  }
}

TEST(FisherTokens, BlockOutputGradientsMatchFiniteDifferences) {
  const std::string dir = test::tmp_dir("fisher_fd");
  check_block_output_grads(test::write_tiny_checkpoint(dir, {}, 31));
  std::filesystem::remove_all(dir);
}

TEST(FisherTokens, MlpRotationBackwardMatchesFiniteDifferencesAndTheUnrotatedModel) {
  const std::string dir = test::tmp_dir("fisher_rot");
  const ViTModel plain = test::write_tiny_checkpoint(dir, {}, 32);
  RotationSpec spec;
  spec.residual = false;
  spec.heads = false;
  spec.mlp = true;
  const ViTModel rot = rotate_model(plain, spec);
  ASSERT_FALSE(rot.mlp_rotation_signs.empty());
  check_block_output_grads(rot);
  // The rotation keeps the function, so the image gradients agree with the plain model's.
  const ViTConfig& c = plain.cfg;
  const int n = 2;
  const std::vector<float> img = test::random_images(c, n, 4);
  std::vector<float> dl(size_t(n) * c.num_classes);
  for (size_t i = 0; i < dl.size(); ++i) dl[i] = std::sin(float(i) + 0.5f);
  std::vector<float> logits(dl.size()), gp(img.size()), gr(img.size());
  ViTInputGrad a(plain), b(rot);
  const std::vector<const float*> none(size_t(a.layers()), nullptr);
  a.forward(img.data(), n, logits.data());
  a.backward(dl.data(), none, gp.data());
  b.forward(img.data(), n, logits.data());
  b.backward(dl.data(), none, gr.data());
  double mx = 0;
  for (float v : gp) mx = std::max(mx, double(std::fabs(v)));
  ASSERT_GT(mx, 0);
  for (size_t i = 0; i < gp.size(); ++i) ASSERT_NEAR(gr[i], gp[i], 1e-4 * mx) << i;
  std::filesystem::remove_all(dir);
}

// The estimate with many draws against the exact E_{y~p}[Σ_d g_y²] (a backward per class, weighted
// by p_y), normalized alike; and its properties: mean 1, ≥ 0, exactly 0 on the last block's tokens
// the head does not read, the same for any batch size.
TEST(FisherTokens, SampledEstimateMatchesTheExactExpectation) {
  const std::string dir = test::tmp_dir("fisher_exact");
  const ViTModel m = test::write_tiny_checkpoint(dir, {}, 33);
  const ViTConfig& c = m.cfg;
  const int n = 2, T = c.tokens(), D = c.embed_dim, NC = c.num_classes, P = c.num_prefix_tokens();
  const std::vector<float> img = test::random_images(c, n, 5);
  const auto est = fisher_token_weights(m, img.data(), n, 2, 800, 7);
  // Exact, in the test: for each image and class y, the block-output gradients of −log p_y.
  std::vector<std::vector<double>> exact(size_t(c.depth), std::vector<double>(size_t(n) * T, 0.0));
  ViTInputGrad g(m);
  std::vector<float> logits(size_t(n) * NC);
  g.forward(img.data(), n, logits.data());
  for (int y = 0; y < NC; ++y) {
    std::vector<float> dl(logits.size());
    std::vector<double> py(static_cast<size_t>(n));
    for (int r = 0; r < n; ++r) {
      double mx = -1e30, s = 0;
      for (int j = 0; j < NC; ++j) mx = std::max(mx, double(logits[size_t(r) * NC + size_t(j)]));
      for (int j = 0; j < NC; ++j) s += std::exp(double(logits[size_t(r) * NC + size_t(j)]) - mx);
      for (int j = 0; j < NC; ++j) {
        const double p = std::exp(double(logits[size_t(r) * NC + size_t(j)]) - mx) / s;
        dl[size_t(r) * NC + size_t(j)] = float(p - (j == y ? 1.0 : 0.0));
        if (j == y) py[size_t(r)] = p;
      }
    }
    g.backward(dl.data(), std::vector<const float*>(size_t(g.layers()), nullptr), nullptr, [&](int i, const float* gr) {
      for (int r = 0; r < n; ++r)
        for (int t = 0; t < T; ++t) {
          double s = 0;
          for (int d = 0; d < D; ++d) s += double(gr[(size_t(r) * T + size_t(t)) * D + size_t(d)]) * gr[(size_t(r) * T + size_t(t)) * D + size_t(d)];
          exact[size_t(i)][size_t(r) * T + size_t(t)] += py[size_t(r)] * s;
        }
    });
  }
  for (int i = 0; i < c.depth; ++i) {
    SCOPED_TRACE(i);
    double mean = 0;
    for (double v : exact[size_t(i)]) mean += v;
    mean /= double(exact[size_t(i)].size());
    ASSERT_GT(mean, 0);
    double emean = 0, err = 0, norm = 0;
    for (size_t k = 0; k < exact[size_t(i)].size(); ++k) {
      const double e = exact[size_t(i)][k] / mean, s = est[size_t(i)][k];
      EXPECT_GE(s, 0.0f);
      emean += s;
      err += (s - e) * (s - e);
      norm += e * e;
      if (i == c.depth - 1 && int(k) % T >= P) {
        EXPECT_EQ(s, 0.0f) << "token " << int(k) % T << " is not read by the head";
      }
    }
    EXPECT_NEAR(emean / double(exact[size_t(i)].size()), 1.0, 1e-5);
    EXPECT_LT(std::sqrt(err / norm), 0.06) << "sampled estimate vs exact expectation (800 draws; 0.012 at 4000)";
  }
  // Draws are per image, so the batch does not change the weights.
  const auto b1 = fisher_token_weights(m, img.data(), n, 1, 8, 7), b2 = fisher_token_weights(m, img.data(), n, 2, 8, 7);
  for (int i = 0; i < c.depth; ++i)
    for (size_t k = 0; k < b1[size_t(i)].size(); ++k) EXPECT_NEAR(b1[size_t(i)][k], b2[size_t(i)][k], 1e-4 * (1 + b2[size_t(i)][k]));
  std::filesystem::remove_all(dir);
}

// The block loss with Fisher share λ: mean over elements of ((1 − λ)·u + λ·f_token)·(y − target)²,
// u the head-share weight — computed here from the simulator's block output.
TEST(FisherTokens, ReconstructionLossWeightsEachToken) {
  const std::string dir = test::tmp_dir("fisher_loss");
  const ViTModel m = test::write_tiny_checkpoint(dir, {}, 34);
  const ViTConfig& c = m.cfg;
  const int n = 4, T = c.tokens(), D = c.embed_dim, P = c.num_prefix_tokens(), blk = 0;
  const std::vector<float> img = test::random_images(c, n, 9);
  const QuantPlan plan = test::minmax_w4a4_token_plan(m, img, n);
  const auto [x, out] = test::quantized_block_io(m, plan, img, n, blk);
  std::vector<float> y(out.size()), tw(size_t(n) * T);
  for (size_t i = 0; i < y.size(); ++i) y[i] = out[i] + 0.1f * std::sin(float(i) * 0.37f);
  for (size_t i = 0; i < tw.size(); ++i) tw[i] = 0.2f + 1.5f * float(i % 5);
  for (double share : {0.0, 0.5}) {
    for (double lambda : {0.0, 0.3, 1.0}) {
      SCOPED_TRACE(testing::Message() << "head share " << share << ", lambda " << lambda);
      double want = 0;
      for (size_t i = 0; i < y.size(); ++i) {
        const int t = int(i / size_t(D)) % T;
        const double u = (1 - share) + (t < P ? share * T / P : 0.0);
        const double w = (1 - lambda) * u + lambda * tw[i / size_t(D)];
        want += w * (double(out[i]) - y[i]) * (double(out[i]) - y[i]);
      }
      want /= double(y.size());
      PlanSimulator s2(m, plan);
      const double got = block_loss_and_grads(m, s2, plan, blk, x.data(), y.data(), n, nullptr, 0, share, tw.data(), lambda);
      EXPECT_NEAR(got, want, 1e-6 * want);
    }
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace vitq
