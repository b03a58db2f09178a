// Bit-Split (Wang et al. 2020): the ternary planes stitch exactly into the integer codes, the
// codes reduce the layer-output error against plain rounding (measured directly here, not with
// the method's own bookkeeping), and the plan carries the codes through the simulator.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/aligned.h"
#include "quant/method.h"
#include "quant/methods/bitsplit.h"
#include "numerics/quantizer.h"
#include "quant/simulate.h"

namespace vitq {
namespace {

// A synthetic layer with correlated input features (what makes output-aware codes matter).
struct Layer {
  int rows = 600, K = 48, N = 16;
  std::vector<float> x, w, b, y;
  explicit Layer(uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> nd(0, 1);
    std::vector<float> mix(size_t(K) * K);
    for (auto& v : mix) v = nd(rng) / std::sqrt(float(K));
    x.resize(size_t(rows) * K);
    std::vector<float> z(static_cast<size_t>(K));
    for (int r = 0; r < rows; ++r) {
      for (auto& v : z) v = nd(rng);
      for (int k = 0; k < K; ++k) {
        double s = 0.3 * z[size_t(k)];
        for (int j = 0; j < K; ++j) s += mix[size_t(k) * K + j] * z[size_t(j)];
        x[size_t(r) * K + k] = float(s);
      }
    }
    w.resize(size_t(N) * K);
    for (auto& v : w) v = 0.1f * nd(rng);
    b.resize(size_t(N));
    for (auto& v : b) v = 0.5f * nd(rng);
    y.resize(size_t(rows) * N);
    for (int r = 0; r < rows; ++r)
      for (int n = 0; n < N; ++n) {
        double s = b[size_t(n)];
        for (int k = 0; k < K; ++k) s += double(x[size_t(r) * K + k]) * w[size_t(n) * K + k];
        y[size_t(r) * N + n] = float(s);
      }
  }
  // Σ ‖Y − (X Ŵᵀ + b)‖² / (rows·N) for ŵ[n][k] = step[n]·q[n][k].
  double output_mse(const std::vector<int16_t>& q, const std::vector<double>& step) const {
    double e = 0;
    for (int r = 0; r < rows; ++r)
      for (int n = 0; n < N; ++n) {
        double s = b[size_t(n)];
        for (int k = 0; k < K; ++k) s += double(x[size_t(r) * K + k]) * step[size_t(n)] * q[size_t(n) * K + k];
        e += (s - y[size_t(r) * N + n]) * (s - y[size_t(r) * N + n]);
      }
    return e / (double(rows) * N);
  }
};

TEST(BitSplit, PlanesStitchIntoTheCodesAndBeatRounding) {
  const Layer L(4);
  for (int bits : {2, 3, 4, 6}) {
    const BitSplitResult r = bit_split(L.x.data(), L.rows, L.K, L.w.data(), L.N, bits, 50);
    ASSERT_EQ(r.planes.size(), size_t(bits - 1));
    const int qm = qmax(bits);
    for (size_t i = 0; i < r.codes.size(); ++i) {
      int stitched = 0;
      for (int m = 0; m < bits - 1; ++m) {
        const int t = r.planes[size_t(m)][i];
        ASSERT_TRUE(t == -1 || t == 0 || t == 1);
        stitched += t * (1 << m);
      }
      ASSERT_EQ(stitched, r.codes[i]) << "bits " << bits << " index " << i;
      ASSERT_LE(std::abs(int(r.codes[i])), qm);
    }
    // Plain rounding at the max-based per-channel step, measured directly.
    std::vector<int16_t> qr(r.codes.size());
    std::vector<double> dr(static_cast<size_t>(L.N)), db(static_cast<size_t>(L.N));
    for (int n = 0; n < L.N; ++n) {
      dr[size_t(n)] = max_step(max_abs(L.w.data() + size_t(n) * L.K, size_t(L.K)), qrange(bits));
      for (int k = 0; k < L.K; ++k)
        qr[size_t(n) * L.K + k] = int16_t(std::clamp(std::nearbyint(L.w[size_t(n) * L.K + k] / dr[size_t(n)]), double(-qm), double(qm)));
      db[size_t(n)] = r.alpha[size_t(n)];
      ASSERT_GT(r.alpha[size_t(n)], 0.0f);
    }
    const double e_round = L.output_mse(qr, dr), e_split = L.output_mse(r.codes, db);
    EXPECT_LT(e_split, e_round) << "bits " << bits;
    if (bits <= 4) {
      EXPECT_LT(e_split, 0.8 * e_round) << "bits " << bits;
    }
    // The method's own accounting agrees with the direct measurement.
    EXPECT_NEAR(r.mse_final, e_split, 1e-3 * e_split + 1e-9) << bits;
    EXPECT_NEAR(r.mse_round_max, e_round, 1e-3 * e_round + 1e-9) << bits;
    EXPECT_LE(r.mse_final, r.mse_init * (1 + 1e-9)) << bits;
  }
}

TEST(BitSplit, MethodPutsTheCodesInThePlanAndTheSimulatorUsesThem) {
  const Layer L(7);
  SiteObservation obs;
  obs.shape = {{SiteKind::Fc2, 1}, 1, 60, L.N, L.K};
  obs.images = L.rows / 60;
  obs.x = L.x.data();
  obs.w = L.w.data();
  obs.bias = L.b.data();
  obs.target = L.y.data();
  MethodConfig cfg;
  cfg.get<BitSplitOptions>("bitsplit").act = "minmax";
  SiteNotes notes;
  const SitePlan sp = make_method("bitsplit", cfg)->calibrate(obs, {3, 6}, notes);
  ASSERT_EQ(sp.weight_codes.size(), size_t(L.N) * L.K);
  ASSERT_EQ(sp.w.channel_scales.size(), size_t(L.N));
  EXPECT_EQ(sp.w.bits, 3);
  EXPECT_EQ(sp.x.bits, 6);
  EXPECT_LE(double(notes.j["output_mse_bitsplit"]), double(notes.j["output_mse_round_max_step"]));
  std::vector<float> y(size_t(L.rows) * L.N);
  avector<float> xb, wb;
  simulate_site(obs.call(y.data()), sp, nullptr, xb, wb);
  for (int r = 0; r < L.rows; r += 7)
    for (int n = 0; n < L.N; ++n) {
      double acc = L.b[size_t(n)];
      for (int k = 0; k < L.K; ++k)
        acc += quantize_one(L.x[size_t(r) * L.K + k], sp.x.scale, sp.x.range()) * double(sp.x.scale) *
               sp.weight_codes[size_t(n) * L.K + k] * double(sp.w.channel_scales[size_t(n)]);
      ASSERT_NEAR(y[size_t(r) * L.N + n], acc, 1e-4 * (1 + std::fabs(acc)));
    }
}

}  // namespace
}  // namespace vitq
