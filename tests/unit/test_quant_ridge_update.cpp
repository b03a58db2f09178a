// The driver's ridge update (quant/ridge_update.h): the fit against its optimality condition
// written out here in double sums over the rows, and the step measured on the site's simulated
// output against its target — with inputs that the layers before the site have perturbed.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/aligned.h"
#include "numerics/quantizer.h"
#include "quant/ridge_update.h"
#include "quant/simulate.h"
#include "quant/weight_rounding.h"
#include "random_test_util.h"

namespace vitq {
namespace {

// A linear site: the FP model's input xf (correlated channels, a few wide), the partly quantized
// model's input x = xf perturbed, weights W, bias b, and the FP target y = xf·Wᵀ + b.
struct Case {
  int images = 2, M = 600, K = 40, N = 24;
  std::vector<float> xf, x, w, b, y;
  SiteObservation obs;
  explicit Case(float perturb) {
    const int rows = images * M;
    std::vector<float> z = test::random_vec(size_t(rows) * K, 1.0f, 11), mix = test::random_vec(size_t(K) * K, 0.3f, 12);
    std::vector<float> noise = test::random_vec(size_t(rows) * K, perturb, 13);
    xf.assign(z.size(), 0.0f);
    for (int r = 0; r < rows; ++r)
      for (int k = 0; k < K; ++k) {
        double s = z[size_t(r) * K + k];
        for (int j = 0; j < K; ++j) s += double(z[size_t(r) * K + j]) * mix[size_t(j) * K + k];
        xf[size_t(r) * K + k] = float(s) * (k % 7 == 0 ? 5.0f : 1.0f);
      }
    // The upstream layers' error: a per-channel gain and offset (systematic, what a refit can undo)
    // plus a little independent noise (what it cannot).
    std::vector<float> gain = test::random_vec(size_t(K), perturb, 16), offs = test::random_vec(size_t(K), perturb, 17);
    x = xf;
    for (int r = 0; r < rows; ++r)
      for (int k = 0; k < K; ++k) {
        float& v = x[size_t(r) * K + k];
        v = v * (1.0f + gain[size_t(k)]) + offs[size_t(k)] + 0.1f * noise[size_t(r) * K + k];
      }
    w = test::random_vec(size_t(N) * K, 0.2f, 14);
    b = test::random_vec(size_t(N), 0.5f, 15);
    y.resize(size_t(rows) * N);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < N; ++c) {
        double s = b[size_t(c)];
        for (int k = 0; k < K; ++k) s += double(xf[size_t(r) * K + k]) * w[size_t(c) * K + k];
        y[size_t(r) * N + c] = float(s);
      }
    obs.shape = {{SiteKind::Fc1, 0}, 1, M, N, K};
    obs.images = images;
    obs.x = x.data();
    obs.w = w.data();
    obs.bias = b.data();
    obs.target = y.data();
  }
};

OperandQuant per_token_input(int bits) {
  OperandQuant q;
  q.bits = bits;
  q.per_token = true;
  return q;
}

TEST(RidgeUpdate, FitSatisfiesTheRegularisedNormalEquations) {
  Case lc(0.2f);
  const int K = lc.K, N = lc.N, rows = lc.images * lc.M;
  const OperandQuant q = per_token_input(4);
  const std::vector<double> H = quantized_input_gram(lc.obs, q);
  const RidgeOptions opt{0.05, RidgeTarget::Fp};
  const RidgeFit f = ridge_fit(lc.obs, q, opt);
  EXPECT_EQ(f.H, H) << "the fit's Gram (one pass with the moments) differs from quantized_input_gram";
  ASSERT_EQ(f.w.size(), size_t(N) * K);
  ASSERT_EQ(f.b.size(), size_t(N));
  // x̂ rows (the same dequantization as the step: checked against the definitions in
  // test_quant_weight_rounding), then for the augmented x̃ = [x̂ 1]:
  //   Σ_r x̃ (x̃ᵀθ_c − y_c) + λ (θ_c − θ0_c) = 0  for every output channel c.
  std::vector<float> xh(size_t(rows) * K);
  dequantized_rows(lc.obs, q, 0, rows, xh.data());
  double diag = rows;
  for (int r = 0; r < rows; ++r)
    for (int k = 0; k < K; ++k) diag += double(xh[size_t(r) * K + k]) * xh[size_t(r) * K + k];
  const double lambda = opt.damp * diag / (K + 1);
  double worst = 0, scale = 0;
  for (int c = 0; c < N; ++c) {
    std::vector<double> g(size_t(K) + 1, 0.0);
    for (int r = 0; r < rows; ++r) {
      double e = f.b[size_t(c)] - double(lc.y[size_t(r) * N + c]);
      for (int k = 0; k < K; ++k) e += double(xh[size_t(r) * K + k]) * f.w[size_t(c) * K + k];
      for (int k = 0; k < K; ++k) g[size_t(k)] += double(xh[size_t(r) * K + k]) * e;
      g[size_t(K)] += e;
      scale = std::max(scale, std::fabs(double(lc.y[size_t(r) * N + c])));
    }
    for (int k = 0; k < K; ++k) g[size_t(k)] += lambda * (double(f.w[size_t(c) * K + k]) - lc.w[size_t(c) * K + k]);
    g[size_t(K)] += lambda * (double(f.b[size_t(c)]) - lc.b[size_t(c)]);
    for (double v : g) worst = std::max(worst, std::fabs(v));
  }
  // Relative to the size of one term of the sums (rows · |x̂| · |y|): float32 rounding of W', b'.
  EXPECT_LT(worst, 1e-5 * rows * scale * std::sqrt(diag / rows)) << worst;
  EXPECT_LT(f.rel_error_after, f.rel_error_before);
  // Thread count independence.
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const RidgeFit one = ridge_fit(lc.obs, q, opt);
  omp_set_num_threads(threads);
  EXPECT_EQ(one.w, f.w);
  EXPECT_EQ(one.b, f.b);
}

// The site's simulated output under a plan, squared error against a target.
double output_error(const Case& lc, const SitePlan& p, const std::vector<float>& target) {
  avector<float> y(lc.y.size()), xb, wb;
  simulate_site(lc.obs.call(y.data()), p, nullptr, xb, wb);
  double e = 0;
  for (size_t i = 0; i < y.size(); ++i) e += (double(y[i]) - target[i]) * (double(y[i]) - target[i]);
  return e;
}

const GptqOptions kGptq{};

// Local target: the site's own FP32 output of its unquantized input, x·Wᵀ + b (double here).
// FP target: the FP model's output xf·Wᵀ + b — which the perturbed input x no longer gives.
TEST(RidgeUpdate, StepLowersTheOutputErrorAgainstItsTarget) {
  for (float perturb : {0.0f, 0.3f})
    for (RidgeTarget target : {RidgeTarget::Local, RidgeTarget::Fp}) {
      Case lc(perturb);
      std::vector<float> y = lc.y;
      if (target == RidgeTarget::Local)
        for (int r = 0; r < lc.images * lc.M; ++r)
          for (int c = 0; c < lc.N; ++c) {
            double s = lc.b[size_t(c)];
            for (int k = 0; k < lc.K; ++k) s += double(lc.x[size_t(r) * lc.K + k]) * lc.w[size_t(c) * lc.K + k];
            y[size_t(r) * lc.N + c] = float(s);
          }
      const std::string what = std::string(target == RidgeTarget::Local ? "local" : "fp") + " target, perturbation " +
                               std::to_string(perturb);
      SitePlan sp;  // a method's plan: 4-bit per-token inputs, 4-bit symmetric per-channel weights
      sp.x = per_token_input(4);
      sp.w.bits = 4;
      for (int c = 0; c < lc.N; ++c)
        sp.w.channel_scales.push_back(max_step(max_abs(lc.w.data() + size_t(c) * lc.K, size_t(lc.K)), sp.w.range()));
      sp.w.scale = *std::max_element(sp.w.channel_scales.begin(), sp.w.channel_scales.end());
      SitePlan g = sp, rn = sp, rg = sp;
      const RidgeOptions opt{0.01, target};
      nlohmann::ordered_json notes;
      ASSERT_TRUE(gptq_weight_step(lc.obs, g, GptqOptions{}, notes));
      ASSERT_TRUE(ridge_weight_step(lc.obs, rn, opt, nullptr, notes));
      ASSERT_TRUE(ridge_weight_step(lc.obs, rg, opt, &kGptq, notes));
      EXPECT_EQ(rg.w.channel_scales, sp.w.channel_scales) << what;  // the method's grid
      ASSERT_EQ(rg.bias_correction.size(), size_t(lc.N));
      const double e_rtn = output_error(lc, sp, y), e_gptq = output_error(lc, g, y), e_rn = output_error(lc, rn, y),
                   e_rg = output_error(lc, rg, y);
      EXPECT_LT(e_rn, e_rtn) << what;
      EXPECT_LT(e_rg, e_gptq) << what;
      EXPECT_LT(e_rg, e_rn) << what;
      if (perturb > 0 && target == RidgeTarget::Fp) {
        EXPECT_LT(e_rg, 0.7 * e_gptq) << "upstream error not compensated: " << e_rg << " vs " << e_gptq;
      }
      // Per-channel bit-widths are left alone.
      SitePlan cb = sp;
      cb.w.channel_bits.assign(size_t(lc.N), 4);
      EXPECT_FALSE(ridge_weight_step(lc.obs, cb, opt, nullptr, notes));
    }
}

}  // namespace
}  // namespace vitq
