// The driver's GPTQ step (quant/weight_rounding.h): the Gram matrix of the quantized inputs
// against a double-precision sum written here, and the step's codes against round-to-nearest on
// the same grid, measured on the site's output.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "core/aligned.h"
#include "numerics/quantizer.h"
#include "quant/simulate.h"
#include "quant/weight_codes.h"
#include "quant/weight_rounding.h"
#include "random_test_util.h"

namespace vitq {
namespace {

// A linear site's observation: `rows` inputs of K correlated channels (a few wide ones), N outputs.
struct LinearCase {
  int images = 3, M = 700, K = 48, N = 20;
  std::vector<float> x, w, target;
  SiteObservation obs;
  LinearCase() {
    const int rows = images * M;
    std::vector<float> z = test::random_vec(size_t(rows) * K, 1.0f, 1), mix = test::random_vec(size_t(K) * K, 0.3f, 2);
    x.assign(z.size(), 0.0f);
    for (int r = 0; r < rows; ++r)
      for (int k = 0; k < K; ++k) {
        double s = z[size_t(r) * K + k];
        for (int j = 0; j < K; ++j) s += double(z[size_t(r) * K + j]) * mix[size_t(j) * K + k];
        x[size_t(r) * K + k] = float(s) * (k % 11 == 0 ? 6.0f : 1.0f);
      }
    w = test::random_vec(size_t(N) * K, 0.2f, 3);
    obs.shape = {{SiteKind::Fc1, 0}, 1, M, N, K};
    obs.images = images;
    obs.x = x.data();
    obs.w = w.data();
  }
};

// x̂ of one row from the definitions (quantizer.h), in double.
std::vector<double> dequantized(const float* x, int K, const OperandQuant& q) {
  std::vector<double> out(static_cast<size_t>(K));
  float step = q.scale;
  int32_t lo = q.range().lo, hi = q.range().hi;
  if (q.per_token) {
    float mn = 0, mx = 0;
    for (int k = 0; k < K; ++k) mn = std::min(mn, x[k]), mx = std::max(mx, x[k]);
    step = (mx - mn) / float((1 << q.bits) - 1) * (1.0f + 1.0f / 1024.0f);
    lo = int32_t(std::nearbyint(mn / step));
    hi = lo + (1 << q.bits) - 1;
  }
  for (int k = 0; k < K; ++k) out[size_t(k)] = double(std::clamp(int32_t(std::nearbyint(x[k] / step)), lo, hi)) * step;
  return out;
}

TEST(WeightRounding, GramOfTheQuantizedInputsIsTheDoubleSum) {
  LinearCase lc;
  const int K = lc.K, rows = lc.images * lc.M;
  for (bool per_token : {false, true}) {
    OperandQuant q;
    q.bits = 4;
    q.per_token = per_token;
    q.scale = per_token ? 0.0f : 0.9f;
    std::vector<double> ref(size_t(K) * K, 0.0);
    for (int r = 0; r < rows; ++r) {
      const std::vector<double> v = dequantized(lc.x.data() + size_t(r) * K, K, q);
      for (int i = 0; i < K; ++i)
        for (int j = 0; j < K; ++j) ref[size_t(i) * K + j] += v[size_t(i)] * v[size_t(j)];
    }
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    const std::vector<double> one = quantized_input_gram(lc.obs, q);
    omp_set_num_threads(std::max(2, threads));
    const std::vector<double> many = quantized_input_gram(lc.obs, q);
    omp_set_num_threads(threads);
    EXPECT_EQ(one, many) << "depends on the thread count";
    double scale = 0;
    for (int i = 0; i < K; ++i) scale = std::max(scale, ref[size_t(i) * K + i]);
    for (size_t i = 0; i < ref.size(); ++i) ASSERT_NEAR(one[i], ref[i], 1e-5 * scale) << per_token << " " << i;
  }
}

TEST(WeightRounding, GptqStepLowersTheSiteOutputErrorOnTheMethodsGrid) {
  LinearCase lc;
  const int N = lc.N, K = lc.K;
  SitePlan sp;
  sp.x.bits = 8;
  sp.x.per_token = true;
  sp.w.bits = 3;
  for (int c = 0; c < N; ++c) {  // the method's grid: a symmetric per-channel step, a small offset
    sp.w.channel_scales.push_back(max_step(max_abs(lc.w.data() + size_t(c) * K, size_t(K)), sp.w.range()));
    sp.weight_offset.push_back(0.001f * float(c % 3));
  }
  sp.w.scale = *std::max_element(sp.w.channel_scales.begin(), sp.w.channel_scales.end());
  SitePlan g = sp;
  nlohmann::ordered_json notes;
  ASSERT_TRUE(gptq_weight_step(lc.obs, g, GptqOptions{}, notes));
  EXPECT_EQ(g.w.channel_scales, sp.w.channel_scales);  // the grid is the method's
  EXPECT_EQ(g.weight_offset, sp.weight_offset);
  ASSERT_EQ(g.weight_codes.size(), size_t(N) * K);
  for (int16_t q : g.weight_codes) ASSERT_TRUE(q >= -4 && q <= 3);
  EXPECT_LT(notes["gptq"]["error_gptq"].get<double>(), 0.8 * notes["gptq"]["error_method"].get<double>()) << notes.dump();
  // On the site's output (simulated, per-token inputs), against the FP output x·Wᵀ.
  const size_t ny = size_t(lc.images) * lc.M * N;
  auto output_error = [&](const SitePlan& p) {
    avector<float> y(ny), xb, wb;
    simulate_site(lc.obs.call(y.data()), p, nullptr, xb, wb);
    double e = 0;
    for (int r = 0; r < lc.images * lc.M; ++r)
      for (int c = 0; c < N; ++c) {
        double t = 0;
        for (int k = 0; k < K; ++k) t += double(lc.x[size_t(r) * K + k]) * lc.w[size_t(c) * K + k];
        e += (y[size_t(r) * N + c] - t) * (y[size_t(r) * N + c] - t);
      }
    return e;
  };
  const double e_rtn = output_error(sp), e_gptq = output_error(g);
  EXPECT_LT(e_gptq, 0.8 * e_rtn) << "RTN " << e_rtn << " GPTQ " << e_gptq;
  // Attention sites and per-channel bit-widths are left alone.
  SitePlan cb = sp;
  cb.w.channel_bits.assign(size_t(N), 3);
  EXPECT_FALSE(gptq_weight_step(lc.obs, cb, GptqOptions{}, notes));
  EXPECT_TRUE(cb.weight_codes.empty());
}

}  // namespace
}  // namespace vitq
