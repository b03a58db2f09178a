// The similarity search against an independent brute force, and bias correction.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/aligned.h"
#include "quant/scale_search.h"
#include "quant/simulate.h"
#include "quant_test_util.h"

namespace vitq {
namespace {

// A synthetic linear site: X [images·M x K], W [N x K], bias, FP target.
struct Synthetic : test::LinearSite {
  explicit Synthetic(uint32_t seed, bool positive_x = false) : LinearSite(6, 40, 24, 10) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0, 1);
    x.resize(size_t(images) * M * K);
    for (auto& v : x) v = positive_x ? std::fabs(nd(rng)) * 0.5f : nd(rng);
    x[7] = 9.0f;  // an outlier makes the max-based step too coarse
    w.resize(size_t(N) * K);
    for (auto& v : w) v = 0.2f * nd(rng) + (positive_x ? 0.05f : 0.0f);
    w[3] = 1.5f;
    b.resize(size_t(N));
    for (auto& v : b) v = nd(rng);
    observe();
  }
};

// Independent reference: fake-quantize in double, per-image Pearson in double.
double fq(double v, double d, int bits) {
  const double hi = (1 << (bits - 1)) - 1, lo = -(1 << (bits - 1));
  return std::clamp(std::nearbyint(v / d), lo, hi) * d;
}

// The objective with channel n's weight step dw·ratio[n] (ratio empty: dw for every channel).
double objective(const Synthetic& s, double dx, double dw, int bits, const std::vector<double>& ratio = {}) {
  double total = 0;
  for (int i = 0; i < s.images; ++i) {
    std::vector<double> o, q;
    for (int r = i * s.M; r < (i + 1) * s.M; ++r)
      for (int n = 0; n < s.N; ++n) {
        double acc = s.b[size_t(n)];
        const double dn = ratio.empty() ? dw : double(float(dw) * float(ratio[size_t(n)]));
        for (int k = 0; k < s.K; ++k) acc += fq(s.x[size_t(r) * s.K + k], dx, bits) * fq(s.w[size_t(n) * s.K + k], dn, bits);
        q.push_back(acc);
        o.push_back(s.y[size_t(r) * s.N + n]);
      }
    double mo = 0, mq = 0;
    for (size_t k = 0; k < o.size(); ++k) { mo += o[k]; mq += q[k]; }
    mo /= double(o.size());
    mq /= double(q.size());
    double c = 0, vo = 0, vq = 0;
    for (size_t k = 0; k < o.size(); ++k) {
      c += (o[k] - mo) * (q[k] - mq);
      vo += (o[k] - mo) * (o[k] - mo);
      vq += (q[k] - mq) * (q[k] - mq);
    }
    total += c / std::sqrt(vo * vq);
  }
  return total / s.images;
}

double maxabs(const std::vector<float>& v) {
  double m = 0;
  for (float f : v) m = std::max(m, double(std::fabs(f)));
  return m;
}

TEST(ScaleSearch, FindsTheBruteForceBestStepsOfOneRound) {
  for (int bits : {3, 4, 6}) {
    Synthetic s(uint32_t(10 + bits));
    SearchOptions o;
    o.candidates = 30;
    o.max_rounds = 1;
    SiteNotes notes;
    SitePlan sp = similarity_search(s.obs, {bits, bits}, o, notes);

    const double qm = (1 << (bits - 1)) - 1;
    const double dx0 = maxabs(s.x) / qm, dw0 = maxabs(s.w) / qm;
    auto cand = [&](double d0, int k) { return d0 * (0.5 + 0.7 * k / 29.0); };
    // Round 1, step 1: best Δw with Δx = Δx0.
    int best_w = 0;
    double best = -2;
    for (int k = 0; k < 30; ++k) {
      const double v = objective(s, dx0, cand(dw0, k), bits);
      if (v > best) { best = v; best_w = k; }
    }
    const double dw = cand(dw0, best_w);
    // Step 2: best Δx with that Δw.
    int best_x = 0;
    best = -2;
    for (int k = 0; k < 30; ++k) {
      const double v = objective(s, cand(dx0, k), dw, bits);
      if (v > best) { best = v; best_x = k; }
    }
    EXPECT_NEAR(sp.w.scale, dw, 1e-6 * dw) << bits << " bits";
    EXPECT_NEAR(sp.x.scale, cand(dx0, best_x), 1e-6 * dx0) << bits << " bits";
    // The search improved on the max-based steps, as the outliers make them too coarse.
    EXPECT_GT(best, objective(s, dx0, dw0, bits)) << bits << " bits";
    EXPECT_LT(sp.x.scale, dx0);
  }
}

// Per-channel weights in the search: channel n's step is Δw·r_n, r_n its max-based step over
// the largest; one round's Δw is the brute-force best of the candidates, and on rows of very
// different magnitudes it beats one step for all.
TEST(ScaleSearch, PerChannelWeightsSearchOneFactorOverTheChannelsMaxSteps) {
  const int bits = 4;
  Synthetic s(31);
  for (int n = 0; n < s.N; ++n)
    for (int k = 0; k < s.K; ++k) s.w[size_t(n) * s.K + k] *= float(n + 1) / 4.0f;
  s.observe();
  SearchOptions o;
  o.candidates = 30;
  o.max_rounds = 1;
  o.per_channel_weights = true;
  SiteNotes notes;
  const SitePlan sp = similarity_search(s.obs, {bits, bits}, o, notes);
  const double qm = (1 << (bits - 1)) - 1;
  std::vector<double> ratio(size_t(s.N));
  double wmax = 0;
  for (int n = 0; n < s.N; ++n) {
    double m = 0;
    for (int k = 0; k < s.K; ++k) m = std::max(m, double(std::fabs(s.w[size_t(n) * s.K + k])));
    ratio[size_t(n)] = m;
    wmax = std::max(wmax, m);
  }
  for (double& r : ratio) r = double(float(float(r) / float(qm)) / float(wmax / qm));  // as float steps
  const double dx0 = maxabs(s.x) / qm, dw0 = wmax / qm;
  auto cand = [&](double d0, int k) { return d0 * (0.5 + 0.7 * k / 29.0); };
  int best_w = 0;
  double best = -2;
  for (int k = 0; k < 30; ++k) {
    const double v = objective(s, dx0, cand(dw0, k), bits, ratio);
    if (v > best) { best = v; best_w = k; }
  }
  const double dw = cand(dw0, best_w);
  ASSERT_EQ(sp.w.channel_scales.size(), size_t(s.N));
  EXPECT_NEAR(sp.w.scale, dw, 1e-6 * dw);
  for (int n = 0; n < s.N; ++n)
    EXPECT_NEAR(sp.w.channel_scales[size_t(n)], dw * ratio[size_t(n)], 1e-5 * dw) << n;
  double best_tensor = -2;
  for (int k = 0; k < 30; ++k) best_tensor = std::max(best_tensor, objective(s, dx0, cand(dw0, k), bits));
  EXPECT_GT(best, best_tensor);
}

TEST(Simulate, LinearSiteWithOneGroupPerImageScalesEveryRow) {
  // The calibration report evaluates a site with one group per image (groups = images, M rows
  // each, one shared weight): every row of every group must be the quantize-dequantize product.
  Synthetic s(8);
  SitePlan sp;
  sp.x.bits = sp.w.bits = 4;
  sp.x.scale = 0.4f;
  sp.w.scale = 0.05f;
  sp.bias_correction.assign(size_t(s.N), 0.0f);
  for (int n = 0; n < s.N; ++n) sp.bias_correction[size_t(n)] = 0.01f * float(n);
  std::vector<float> y(size_t(s.images) * s.M * s.N);
  const SiteCall c = s.obs.call(y.data());  // one group per image
  ASSERT_EQ(c.groups, s.images);
  avector<float> xb, wb;
  simulate_site(c, sp, nullptr, xb, wb);
  for (int r = 0; r < s.images * s.M; ++r)
    for (int n = 0; n < s.N; ++n) {
      double acc = double(s.b[size_t(n)]) + sp.bias_correction[size_t(n)];
      for (int k = 0; k < s.K; ++k) acc += fq(s.x[size_t(r) * s.K + k], 0.4, 4) * fq(s.w[size_t(n) * s.K + k], 0.05, 4);
      ASSERT_NEAR(y[size_t(r) * s.N + n], acc, 1e-4 * (1 + std::fabs(acc))) << "row " << r << " channel " << n;
    }
}

TEST(ScaleSearch, ScreenPassesOnlyItsBestCandidatesToTheFullScore) {
  // The candidate screen ranks all Δx candidates on a row sample and scores the `keep` best on
  // all rows. With keep = C − 1 only one candidate is dropped, so the chosen Δx must be the best
  // or the second best by the brute-force objective on all rows (Δw comes from the exact
  // weight-moment sweep, as without a screen).
  const int bits = 4, C = 30;
  Synthetic s(21);
  SearchOptions o;
  o.candidates = C;
  o.max_rounds = 1;
  o.screen_rows = 10;  // of M = 40
  o.screen_keep = C - 1;
  SiteNotes notes;
  SitePlan sp = similarity_search(s.obs, {bits, bits}, o, notes);
  EXPECT_EQ(notes.j["screen_rows_per_image"].get<int>(), 10);
  const double qm = (1 << (bits - 1)) - 1;
  const double dx0 = maxabs(s.x) / qm;
  std::vector<double> v(C);
  int chosen = -1;
  for (int k = 0; k < C; ++k) {
    const double dx = dx0 * (0.5 + 0.7 * k / double(C - 1));
    v[size_t(k)] = objective(s, dx, sp.w.scale, bits);
    if (std::fabs(dx - sp.x.scale) < 1e-6 * dx0) chosen = k;
  }
  ASSERT_GE(chosen, 0) << "the chosen step is not a candidate";
  int better = 0;
  for (int k = 0; k < C; ++k) better += v[size_t(k)] > v[size_t(chosen)] + 1e-12;
  EXPECT_LE(better, 1);

  // A screen as large as the data is no screen: the same plan as without one.
  SearchOptions full = o, same = o;
  full.screen_rows = 0;
  same.screen_rows = s.M;
  SiteNotes n1, n2;
  EXPECT_EQ(similarity_search(s.obs, {bits, bits}, full, n1), similarity_search(s.obs, {bits, bits}, same, n2));
  EXPECT_FALSE(n2.j.contains("screen_rows_per_image"));
}

TEST(ScaleSearch, CoarseToFineScoresItsGridAndTheBestOnesNeighbours) {
  // With a stride S the Δx sweep scores candidates 0, S, 2S, … and the last, then every one
  // between the best of those and its coarse neighbours, and keeps the best scored. Replay that
  // rule on the brute-force objective of every candidate and compare the choice and the count.
  const int bits = 4, C = 30, S = 5;
  for (uint32_t seed : {31u, 32u, 33u}) {
    Synthetic s(seed);
    SearchOptions o;
    o.candidates = C;
    o.max_rounds = 1;
    o.coarse_stride = S;
    SiteNotes notes;
    const SitePlan sp = similarity_search(s.obs, {bits, bits}, o, notes);
    SearchOptions all = o;
    all.coarse_stride = 0;
    SiteNotes notes_all;
    const SitePlan sp_all = similarity_search(s.obs, {bits, bits}, all, notes_all);
    EXPECT_EQ(sp.w.scale, sp_all.w.scale) << "the weight sweep (from moments) scores every candidate";

    const double dx0 = maxabs(s.x) / ((1 << (bits - 1)) - 1);
    auto cand = [&](int k) { return dx0 * (0.5 + 0.7 * k / double(C - 1)); };
    std::vector<double> v(C);
    for (int k = 0; k < C; ++k) v[size_t(k)] = objective(s, cand(k), sp.w.scale, bits);
    std::vector<bool> scored(C, false);
    for (int k = 0; k < C; k += S) scored[size_t(k)] = true;
    scored[C - 1] = true;
    auto best_scored = [&]() {
      int b = -1;
      for (int k = 0; k < C; ++k)
        if (scored[size_t(k)] && (b < 0 || v[size_t(k)] > v[size_t(b)])) b = k;
      return b;
    };
    const int b = best_scored();
    const int lo = b == C - 1 ? (C - 2) / S * S : std::max(b - S, 0), hi = b == C - 1 ? C - 1 : std::min(b + S, C - 1);
    int fine = 0;
    for (int k = lo + 1; k < hi; ++k) {
      fine += !scored[size_t(k)];
      scored[size_t(k)] = true;
    }
    const int chosen = best_scored();
    EXPECT_NEAR(sp.x.scale, cand(chosen), 1e-6 * dx0) << "seed " << seed;
    // Start + C weight candidates + the Δx candidates scored: the coarse grid and the fine ones.
    const int coarse = (C - 1 + S - 1) / S + 1;
    EXPECT_EQ(notes.j["evaluations"].get<int>(), 1 + C + coarse + fine) << "seed " << seed;
    EXPECT_EQ(notes_all.j["evaluations"].get<int>(), 1 + 2 * C);
    // Where the objective has one peak over the candidates, the choice is the exhaustive one.
    int peaks = 0;
    for (int k = 0; k < C; ++k)
      peaks += (k == 0 || v[size_t(k)] > v[size_t(k - 1)]) && (k == C - 1 || v[size_t(k)] >= v[size_t(k + 1)]);
    if (peaks == 1) {
      EXPECT_EQ(sp.x.scale, sp_all.x.scale) << "seed " << seed;
    }
  }
}

TEST(ScaleSearch, ConvergesAndNeverEndsBelowItsStart) {
  Synthetic s(3);
  SearchOptions o;
  o.candidates = 25;
  SiteNotes notes;
  similarity_search(s.obs, {4, 4}, o, notes);
  EXPECT_GE(notes.j["objective"].get<double>(), notes.j["objective_start"].get<double>());
  EXPECT_LT(notes.j["rounds"].get<int>(), 20);
}

// The whole alternation (no bias correction) against the brute force run until a round changes
// neither step: the search's shortcut (stop once a Δw sweep keeps its Δw) must land on the same
// steps as running the confirming round in full.
TEST(ScaleSearch, AlternationToConvergenceMatchesTheBruteForce) {
  int shortcuts = 0;
  for (uint32_t seed : {21u, 22u, 23u}) {
    const int bits = 4, C = 20;
    Synthetic s(seed);
    SearchOptions o;
    o.candidates = C;
    SiteNotes notes;
    const SitePlan sp = similarity_search(s.obs, {bits, bits}, o, notes);
    const double qm = (1 << (bits - 1)) - 1;
    const double dx0 = maxabs(s.x) / qm, dw0 = maxabs(s.w) / qm;
    auto cand = [&](double d0, int k) { return d0 * (0.5 + 0.7 * k / double(C - 1)); };
    double dx = dx0, dw = dw0;
    int rounds = 0;
    for (; rounds < 20; ++rounds) {
      double best = -2, w = dw, x = dx;
      for (int k = 0; k < C; ++k) {
        const double v = objective(s, dx, cand(dw0, k), bits);
        if (v > best) { best = v; w = cand(dw0, k); }
      }
      best = -2;
      for (int k = 0; k < C; ++k) {
        const double v = objective(s, cand(dx0, k), w, bits);
        if (v > best) { best = v; x = cand(dx0, k); }
      }
      const bool changed = w != dw || x != dx;
      dw = w;
      dx = x;
      if (!changed) break;
    }
    ASSERT_LT(rounds, 20);
    EXPECT_NEAR(sp.w.scale, dw, 1e-6 * dw) << "seed " << seed;
    EXPECT_NEAR(sp.x.scale, dx, 1e-6 * dx) << "seed " << seed;
    shortcuts += notes.j["trace"].back().contains("converged_after_w_sweep");
  }
  EXPECT_GT(shortcuts, 0) << "no case took the shortcut";
}

TEST(ScaleSearch, BiasCorrectionRemovesTheMeanOutputError) {
  Synthetic s(5, /*positive_x=*/true);  // post-GELU-like inputs: rounding errors do not average out
  for (bool bc : {false, true}) {
    SearchOptions o;
    o.candidates = 20;
    o.max_rounds = 1;
    o.bias_correction = bc;
    SiteNotes notes;
    SitePlan sp = similarity_search(s.obs, {3, 3}, o, notes);
    // Independent evaluation of the mean error per output channel at the chosen steps.
    double worst = 0, scale = 0;
    for (int n = 0; n < s.N; ++n) {
      double err = 0;
      for (int r = 0; r < s.images * s.M; ++r) {
        double acc = s.b[size_t(n)] + (bc ? sp.bias_correction[size_t(n)] : 0.0);
        for (int k = 0; k < s.K; ++k)
          acc += fq(s.x[size_t(r) * s.K + k], sp.x.scale, 3) * fq(s.w[size_t(n) * s.K + k], sp.w.scale, 3);
        err += acc - s.y[size_t(r) * s.N + n];
        scale = std::max(scale, double(std::fabs(s.y[size_t(r) * s.N + n])));
      }
      worst = std::max(worst, std::fabs(err / (s.images * s.M)));
    }
    if (bc) {
      ASSERT_EQ(sp.bias_correction.size(), size_t(s.N));
      EXPECT_LT(worst, 1e-5 * scale);
    } else {
      EXPECT_GT(worst, 1e-2 * scale);  // the uncorrected layer is measurably biased
    }
  }
}

}  // namespace
}  // namespace vitq
