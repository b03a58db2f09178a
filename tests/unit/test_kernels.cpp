// The vectorised element-wise kernels against their scalar libm references.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "engine/kernels.h"
#include "random_test_util.h"

namespace vitq {
namespace {

using test::random_vec;

TEST(Kernels, ExpApproxRelativeError) {
  double worst = 0;
  for (float x = -87.0f; x <= 88.0f; x += 0.001953125f) {
    const double ref = std::exp(double(x));
    worst = std::max(worst, std::fabs(double(exp_approx(x)) - ref) / ref);
  }
  EXPECT_LT(worst, 2e-7);
}

TEST(Kernels, ErfApproxAbsoluteError) {
  double worst = 0;
  for (float x = -6.0f; x <= 6.0f; x += 0.0009765625f)
    worst = std::max(worst, std::fabs(double(erf_approx(x)) - std::erf(double(x))));
  EXPECT_LT(worst, 3e-7);  // the documented bound: A&S 7.1.26's 1.5e-7 plus float rounding
  EXPECT_EQ(erf_approx(0.0f), 0.0f);
}

TEST(Kernels, LayerNormMatchesReference) {
  for (size_t n : {1u, 7u, 64u, 192u, 385u, 1024u}) {
    const size_t rows = 5;
    auto x = random_vec(rows * n, 3.0f, 1);
    for (size_t i = 0; i < x.size(); ++i) x[i] += 10.0f;  // a large mean stresses the variance
    auto g = random_vec(n, 1.0f, 2), b = random_vec(n, 1.0f, 3);
    std::vector<float> y(rows * n), r(rows * n);
    layernorm_rows(x.data(), y.data(), rows, n, g.data(), b.data(), 1e-6f);
    layernorm_rows_ref(x.data(), r.data(), rows, n, g.data(), b.data(), 1e-6f);
    for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], r[i], 2e-5f * (1 + std::fabs(r[i]))) << "n=" << n;
  }
}

TEST(Kernels, SoftmaxMatchesReference) {
  for (size_t n : {1u, 3u, 65u, 197u, 577u}) {
    const size_t rows = 4;
    auto s = random_vec(rows * n, 8.0f, 4);
    auto r = s;
    softmax_rows(s.data(), rows, n, 0.125f);
    softmax_rows_ref(r.data(), rows, n, 0.125f);
    for (size_t row = 0; row < rows; ++row) {
      double sum = 0;
      for (size_t j = 0; j < n; ++j) {
        ASSERT_NEAR(s[row * n + j], r[row * n + j], 1e-6f * (1 + r[row * n + j]) + 1e-9f);
        sum += s[row * n + j];
      }
      EXPECT_NEAR(sum, 1.0, 1e-5);
    }
  }
}

TEST(Kernels, SoftmaxHandlesLargeScores) {
  std::vector<float> s = {1000.0f, 999.0f, -1000.0f};
  softmax_rows(s.data(), 1, 3, 1.0f);
  EXPECT_NEAR(s[0], 1.0 / (1.0 + std::exp(-1.0)), 1e-6);
  EXPECT_NEAR(s[1], std::exp(-1.0) / (1.0 + std::exp(-1.0)), 1e-6);
  EXPECT_EQ(s[2], 0.0f);
}

TEST(Kernels, BiasGeluMatchesReference) {
  const size_t rows = 3, n = 771;
  auto x = random_vec(rows * n, 4.0f, 5);
  auto bias = random_vec(n, 1.0f, 6);
  auto r = x;
  bias_gelu_rows(x.data(), rows, n, bias.data());
  bias_gelu_rows_ref(r.data(), rows, n, bias.data());
  for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(x[i], r[i], 1e-6f * (1 + std::fabs(r[i])));
}

TEST(Kernels, GeluGradMatchesReference) {
  std::mt19937 rng(9);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  const size_t n = 4099;  // not a multiple of any vector width
  std::vector<float> h(n), d(n), r;
  for (size_t i = 0; i < n; ++i) {
    h[i] = nd(rng);
    d[i] = nd(rng);
  }
  h[0] = 0.0f;
  h[1] = -12.0f;
  h[2] = 12.0f;
  r = d;
  const float d0 = d[0];
  gelu_grad_mul(d.data(), h.data(), n);
  gelu_grad_mul_ref(r.data(), h.data(), n);
  for (size_t i = 0; i < n; ++i) ASSERT_NEAR(d[i], r[i], 1e-6f * (1.0f + std::fabs(r[i]))) << "h = " << h[i];
  EXPECT_FLOAT_EQ(d[0], 0.5f * d0);  // GELU'(0) = 1/2
  EXPECT_NEAR(d[1], 0.0f, 1e-6f);     // GELU'(-12) ≈ 0
  EXPECT_FLOAT_EQ(d[2], r[2]);        // GELU'(12) ≈ 1
}

TEST(Kernels, ResidualAndBias) {
  std::vector<float> acc = {1, 2, 3, 4}, y = {10, 20, 30, 40}, b = {100, 200};
  add_bias_residual_rows(acc.data(), y.data(), 2, 2, b.data());
  EXPECT_EQ(acc, (std::vector<float>{111, 222, 133, 244}));
  add_bias_rows(acc.data(), 2, 2, b.data());
  EXPECT_EQ(acc, (std::vector<float>{211, 422, 233, 444}));
}

}  // namespace
}  // namespace vitq
