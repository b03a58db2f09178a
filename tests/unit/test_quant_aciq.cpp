// ACIQ (Banner et al. 2019): the analytical clip against a brute-force minimisation of the same
// expected error and against the empirical error on synthetic data, the closed form against
// numerical integration, the bit allocation against its budget and uniform allocation, and the
// bias correction (weight codes + weight offset) through the simulator.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "core/aligned.h"
#include "quant/calibrate.h"
#include "quant/method.h"
#include "quant/methods/aciq.h"
#include "numerics/quantizer.h"
#include "quant/simulate.h"
#include "quant_test_util.h"

namespace vitq {
namespace {

std::vector<float> laplace_data(size_t n, double mu, double b, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-0.5, 0.5);
  std::vector<float> x(n);
  for (auto& v : x) {  // inverse CDF
    const double p = u(rng);
    v = float(mu - b * (p < 0 ? -1 : 1) * std::log(1 - 2 * std::fabs(p)));
  }
  return x;
}

std::vector<float> gauss_data(size_t n, double mu, double s, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(mu, s);
  std::vector<float> x(n);
  for (auto& v : x) v = float(nd(rng));
  return x;
}

double empirical_mse(const std::vector<float>& x, double alpha, int bits) {
  const QRange r = qrange(bits);
  const double d = alpha / r.hi;
  double e = 0;
  for (float v : x) {
    const double q = std::clamp(std::nearbyint(v / d), double(r.lo), double(r.hi)) * d;
    e += (v - q) * (v - q);
  }
  return e / double(x.size());
}

TEST(Aciq, ClipMatchesBruteForceMinimisationOfTheExpectedError) {
  for (AciqDist d : {AciqDist::Laplace, AciqDist::Gauss})
    for (int bits = 2; bits <= 8; ++bits)
      for (bool uns : {false, true})
        for (double mu : {0.0, 0.3, -0.2}) {
          if (uns && mu < 0) continue;
          const double s = 1.7;
          const double a = aciq_optimal_clip(d, mu, s, bits, uns);
          // Brute force: a fine grid over (0, |μ| + 40 s], then the best grid cell refined on a finer grid.
          const double top = std::fabs(mu) + 40 * s;
          const int G = 200000;
          double best = 0, be = INFINITY;
          for (int i = 1; i <= G; ++i) {
            const double al = top * i / G, e = aciq_expected_mse(d, mu, s, al, bits, uns);
            if (e < be) be = e, best = al;
          }
          const double lo = best - top / G, hi = best + top / G;
          for (int i = 0; i <= 2000; ++i) {
            const double al = lo + (hi - lo) * i / 2000, e = aciq_expected_mse(d, mu, s, al, bits, uns);
            if (e < be) be = e, best = al;
          }
          EXPECT_NEAR(a, best, 0.01 * best) << aciq_dist_name(d) << " bits " << bits << " unsigned " << uns << " mu " << mu;
          EXPECT_LE(aciq_expected_mse(d, mu, s, a, bits, uns), be * (1 + 1e-9));
        }
}

TEST(Aciq, SymmetricCaseIsThePapersClosedForm) {
  // μ = 0: the clipping part is the paper's Laplace (2b²e^(−α/b)) and Gaussian expressions,
  // here with vitq's grid: upper clip α, lower clip α(1 + 1/hi).
  const double b = 0.8, s = 1.3, pi = std::acos(-1.0);
  for (int bits : {3, 4, 8}) {
    const double hi = qmax(bits);
    for (double a : {0.5, 2.0, 5.0}) {
      const double lap = b * b * std::exp(-a / b) + b * b * std::exp(-a * (1 + 1 / hi) / b) + (a / hi) * (a / hi) / 12;
      EXPECT_NEAR(aciq_expected_mse(AciqDist::Laplace, 0, b, a, bits, false), lap, 1e-12 * lap);
      auto gtail = [&](double al) {  // one half of the paper's Gaussian term
        return 0.5 * ((al * al + s * s) * (1 - std::erf(al / (std::sqrt(2.0) * s))) -
                      std::sqrt(2 / pi) * al * s * std::exp(-al * al / (2 * s * s)));
      };
      const double gau = gtail(a) + gtail(a * (1 + 1 / hi)) + (a / hi) * (a / hi) / 12;
      EXPECT_NEAR(aciq_expected_mse(AciqDist::Gauss, 0, s, a, bits, false), gau, 1e-9 * gau);  // 1 − erf cancels
    }
  }
}

TEST(Aciq, ClippingNoiseMatchesNumericalIntegrationOfTheDensity) {
  // Independent check of the tails (shifted, and with a clip on either side of the mean):
  // E[(X − clip(X))²] by Simpson's rule on the density, vs the closed form minus Δ²/12.
  const double pi = std::acos(-1.0);
  for (AciqDist d : {AciqDist::Laplace, AciqDist::Gauss})
    for (double mu : {0.0, 0.7, -1.1}) {
      const double s = 0.9;
      auto pdf = [&](double x) {
        const double u = x - mu;
        return d == AciqDist::Laplace ? std::exp(-std::fabs(u) / s) / (2 * s)
                                      : std::exp(-u * u / (2 * s * s)) / (s * std::sqrt(2 * pi));
      };
      for (double alpha : {0.5, 1.0, 3.0}) {
        const int bits = 4;
        const double hi = qmax(bits), up = alpha, lo = -alpha * (1 + 1 / hi);
        const double L = std::fabs(mu) + 80 * s;
        const int n = 400000;
        double integral = 0;
        for (int i = 0; i <= n; ++i) {
          const double x = -L + 2 * L * i / n;
          const double c = x > up ? x - up : (x < lo ? x - lo : 0.0);
          const double wgt = (i == 0 || i == n) ? 1 : (i % 2 ? 4 : 2);
          integral += wgt * c * c * pdf(x);
        }
        integral *= (2 * L / n) / 3;
        const double closed = aciq_expected_mse(d, mu, s, alpha, bits, false) - (alpha / hi) * (alpha / hi) / 12;
        EXPECT_NEAR(closed, integral, 1e-6 * std::max(integral, 1e-3)) << aciq_dist_name(d) << " mu " << mu << " a " << alpha;
      }
    }
}

TEST(Aciq, FitPicksTheTrueFamilyAndEmpiricalMseIsLeastAtTheClip) {
  const size_t n = 1'000'000;
  for (AciqDist truth : {AciqDist::Laplace, AciqDist::Gauss}) {
    const std::vector<float> x =
        truth == AciqDist::Laplace ? laplace_data(n, 0.1, 0.5, 11) : gauss_data(n, -0.05, 0.7, 12);
    const AciqFit f = aciq_fit(x.data(), x.size());
    EXPECT_EQ(f.best, truth);
    EXPECT_NEAR(truth == AciqDist::Laplace ? f.b : f.sigma, truth == AciqDist::Laplace ? 0.5 : 0.7, 0.005);
    for (int bits : {2, 3, 4, 6, 8}) {
      const double a = std::min(aciq_optimal_clip(f.best, f.mean, f.scale(f.best), bits, false), f.max_abs);
      const double e = empirical_mse(x, a, bits);
      EXPECT_LE(e, empirical_mse(x, 0.8 * a, bits)) << aciq_dist_name(truth) << " bits " << bits;
      EXPECT_LE(e, empirical_mse(x, 1.2 * a, bits)) << aciq_dist_name(truth) << " bits " << bits;
      // The model's expected error predicts the empirical one (Δ²/12 is an approximation).
      EXPECT_NEAR(aciq_expected_mse(f.best, f.mean, f.scale(f.best), a, bits, false), e, 0.1 * e) << bits;
    }
  }
}

TEST(Aciq, BitAllocationRespectsTheBudgetAndBeatsUniformBits) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> lr(0, std::log(32.0));
  for (int trial = 0; trial < 40; ++trial) {
    const int N = 8 + int(rng() % 120), bits = 3 + int(rng() % 4), K = 64;
    std::vector<double> range(static_cast<size_t>(N));
    for (auto& r : range) r = 0.01 * std::exp(lr(rng));
    if (trial % 5 == 0) range[0] = 0;  // a dead channel
    const std::vector<int> cb = aciq_allocate_bits(range, bits);
    ASSERT_EQ(cb.size(), size_t(N));
    const int64_t used = std::accumulate(cb.begin(), cb.end(), int64_t(0));
    EXPECT_LE(used, int64_t(N) * bits);
    EXPECT_GE(used, int64_t(N) * bits - N);  // rounding down wastes less than a bit per channel
    for (int b : cb) {
      EXPECT_GE(b, 2);
      EXPECT_LE(b, 8);
    }
    // Channels uniform in ±range: quantize each with its max-based step at its bits.
    std::uniform_real_distribution<double> u(-1, 1);
    double mse_alloc = 0, mse_uniform = 0;
    for (int c = 0; c < N; ++c) {
      std::vector<float> w(static_cast<size_t>(K));
      for (auto& v : w) v = float(range[size_t(c)] * u(rng));
      const float mx = max_abs(w.data(), w.size());
      auto err = [&](int b) {
        const QRange r = qrange(b);
        const float d = max_step(mx, r);
        double e = 0;
        for (float v : w) {
          const double q = quantize_one(v, d, r) * double(d);
          e += (v - q) * (v - q);
        }
        return e;
      };
      mse_alloc += err(cb[size_t(c)]);
      mse_uniform += err(bits);
    }
    EXPECT_LT(mse_alloc, mse_uniform) << "trial " << trial;
  }
  // At (or above) 8 bits every channel gets the ceiling.
  EXPECT_EQ(aciq_allocate_bits({1, 2, 3}, 8), (std::vector<int>{8, 8, 8}));
}

// A linear site with weights of unequal channel ranges and non-zero channel means.
struct Site : test::LinearSite {
  Site() : LinearSite(3, 20, 40, 12) {
    std::mt19937 rng(3);
    std::normal_distribution<float> nd(0, 1);
    x.resize(size_t(images) * M * K);
    for (auto& v : x) v = nd(rng);
    w.resize(size_t(N) * K);
    for (int c = 0; c < N; ++c)
      for (int k = 0; k < K; ++k) w[size_t(c) * K + k] = 0.05f * (1 + c) * nd(rng) + 0.02f * (c % 3 - 1);
    b.assign(size_t(N), 0.1f);
    observe();
  }
};

TEST(Aciq, BiasCorrectionRestoresChannelMeanAndNormThroughThePlan) {
  Site s;
  std::unique_ptr<Method> m = make_method("aciq", MethodConfig());
  SiteNotes notes;
  const SitePlan sp = m->calibrate(s.obs, {4, 4}, notes);
  ASSERT_EQ(sp.weight_codes.size(), size_t(s.N) * s.K);
  ASSERT_EQ(sp.weight_offset.size(), size_t(s.N));
  ASSERT_EQ(sp.w.channel_bits.size(), size_t(s.N));
  for (int c = 0; c < s.N; ++c) {
    const QRange r = sp.w.channel_range(size_t(c));
    double mu = 0, mut = 0;
    for (int k = 0; k < s.K; ++k) {
      const int q = sp.weight_codes[size_t(c) * s.K + k];
      EXPECT_GE(q, r.lo);
      EXPECT_LE(q, r.hi);
      mu += s.w[size_t(c) * s.K + k];
      mut += q * double(sp.w.channel_scales[size_t(c)]) + sp.weight_offset[size_t(c)];
    }
    mu /= s.K, mut /= s.K;
    double nn = 0, nt = 0;
    for (int k = 0; k < s.K; ++k) {
      const double wt = sp.weight_codes[size_t(c) * s.K + k] * double(sp.w.channel_scales[size_t(c)]) + sp.weight_offset[size_t(c)];
      nn += (s.w[size_t(c) * s.K + k] - mu) * (s.w[size_t(c) * s.K + k] - mu);
      nt += (wt - mut) * (wt - mut);
    }
    EXPECT_NEAR(mut, mu, 1e-6) << c;
    EXPECT_NEAR(std::sqrt(nt), std::sqrt(nn), 1e-5 * std::sqrt(nn)) << c;
  }
  // The simulator computes y = x̂ · (codes · Δ_c + offset_c)ᵀ + bias.
  SiteCall call;
  call.site = s.obs.shape.id;
  call.images = s.images;
  call.M = s.images * s.M;
  call.N = s.N;
  call.K = s.K;
  call.x = s.x.data();
  call.w = s.w.data();
  call.bias = s.b.data();
  std::vector<float> y(size_t(call.M) * s.N);
  call.y = y.data();
  avector<float> xb, wb;
  simulate_site(call, sp, nullptr, xb, wb);
  for (int r = 0; r < call.M; ++r)
    for (int n = 0; n < s.N; ++n) {
      double acc = s.b[size_t(n)];
      for (int k = 0; k < s.K; ++k) {
        const double xq = quantize_one(s.x[size_t(r) * s.K + k], sp.x.scale, sp.x.range()) * double(sp.x.scale);
        acc += xq * (sp.weight_codes[size_t(n) * s.K + k] * double(sp.w.channel_scales[size_t(n)]) +
                     sp.weight_offset[size_t(n)]);
      }
      ASSERT_NEAR(y[size_t(r) * s.N + n], acc, 1e-4 * (1 + std::fabs(acc))) << r << " " << n;
    }
}

TEST(Aciq, PartsSwitchOff) {
  Site s;
  MethodConfig cfg;
  AciqOptions& a = cfg.get<AciqOptions>("aciq");
  a.clip = false;
  a.bit_alloc = false;
  a.bias_correction = false;
  SiteNotes notes;
  const SitePlan sp = make_method("aciq", cfg)->calibrate(s.obs, {4, 4}, notes);
  const SitePlan mm = minmax_site_plan(s.obs, {4, 4});
  EXPECT_EQ(sp.x.scale, mm.x.scale);        // no clipping: max-based
  EXPECT_TRUE(sp.w.channel_bits.empty());   // no allocation
  EXPECT_FALSE(sp.has_weight_codes());      // no correction
  EXPECT_TRUE(sp.weight_offset.empty());
  EXPECT_EQ(sp.w.channel_scales.size(), size_t(s.N));  // per-channel max-based steps
}

}  // namespace
}  // namespace vitq
