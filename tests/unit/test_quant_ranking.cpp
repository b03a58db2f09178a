// The ranking-aware loss: the sorted exact sum and the sampled approximation against the
// naive pair sum of the paper's formula.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "quant/similarity.h"

namespace vitq {
namespace {

// The paper's formula, written out directly: Σ_{i<j} max(θ − (q_i − q_j)·sign(a_i − a_j), 0).
double naive(const std::vector<float>& a, const std::vector<float>& q, double theta) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i)
    for (size_t j = i + 1; j < a.size(); ++j) {
      const double sg = a[i] > a[j] ? 1 : (a[i] < a[j] ? -1 : 0);
      s += std::max(theta - (double(q[i]) - q[j]) * sg, 0.0);
    }
  return s;
}

TEST(Ranking, SortedExactEqualsNaivePairSum) {
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0, 1);
  for (size_t n : {1u, 2u, 3u, 17u, 65u, 197u}) {
    for (int trial = 0; trial < 3; ++trial) {
      std::vector<float> a(n), q(n), scratch(ranking_scratch_size(n));
      for (size_t i = 0; i < n; ++i) {
        a[i] = std::round(nd(rng) * 4) / 4;  // many ties
        q[i] = a[i] + 0.3f * nd(rng);
      }
      const double ref = naive(a, q, 0.2);
      const double got_exact = ranking_loss_row_exact(a.data(), q.data(), n, 0.2f);
      const double got_sorted = ranking_loss_sorted(rank_order(a.data(), n), q.data(), 0.2f, scratch.data());
      EXPECT_NEAR(got_exact, ref, 1e-6 * (1 + ref)) << "n=" << n;
      EXPECT_NEAR(got_sorted, ref, 2e-5 * (1 + ref)) << "n=" << n;
    }
  }
}

TEST(Ranking, WindowedSumEqualsNaiveForSmallAndLargeErrors) {
  // The sorted sum scans for each p only up to the last r whose q can be within θ of q_p: check it
  // where those windows are a few pairs (wide scores, small errors), about half the row, and all
  // of it (q unrelated to a), with and without ties, and with clipping (many equal q at the top).
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0, 1);
  const size_t n = 197;
  for (float spread : {40.0f, 4.0f}) {
    for (float err : {0.01f, 0.1f, 1.0f, 100.0f}) {
      for (bool ties : {false, true}) {
        std::vector<float> a(n), q(n), scratch(ranking_scratch_size(n));
        for (size_t i = 0; i < n; ++i) {
          a[i] = spread * nd(rng);
          if (ties) a[i] = std::round(a[i]);
          q[i] = a[i] + err * nd(rng);
        }
        std::vector<float> clipped(q);
        const float cap = spread * 0.5f;
        for (float& v : clipped) v = std::min(std::round(v), cap);
        const double ref_clip = naive(a, clipped, 0.2);
        EXPECT_NEAR(ranking_loss_sorted(rank_order(a.data(), n), clipped.data(), 0.2f, scratch.data()), ref_clip,
                    2e-5 * (1 + ref_clip))
            << "clipped: spread " << spread << " err " << err << " ties " << ties;
        const double ref = naive(a, q, 0.2);
        EXPECT_NEAR(ranking_loss_sorted(rank_order(a.data(), n), q.data(), 0.2f, scratch.data()), ref,
                    2e-5 * (1 + ref))
            << "spread " << spread << " err " << err << " ties " << ties;
      }
    }
  }
}

TEST(Ranking, PerfectOrderWithMarginHasZeroLoss) {
  std::vector<float> a = {3, 2, 1, 0}, q = {30, 20, 10, 0}, scratch(ranking_scratch_size(4));
  EXPECT_EQ(ranking_loss_sorted(rank_order(a.data(), 4), q.data(), 0.2f, scratch.data()), 0.0);
  // Every pair inverted, by 10, 20, 30, 10, 20, 10: loss = 100 + 6 · 0.2.
  std::vector<float> rev = {0, 10, 20, 30};
  EXPECT_NEAR(naive(a, rev, 0.2), 101.2, 1e-9);
  EXPECT_NEAR(ranking_loss_sorted(rank_order(a.data(), 4), rev.data(), 0.2f, scratch.data()), 101.2, 1e-4);
  // Equal FP scores have sign 0: each such pair costs θ whatever q is.
  std::vector<float> flat = {1, 1, 1}, anyq = {5, -3, 0.5f};
  EXPECT_NEAR(ranking_loss_sorted(rank_order(flat.data(), 3), anyq.data(), 0.2f, scratch.data()), 0.6, 1e-6);
}

TEST(Ranking, TokenSubsetEstimatesTheExactMean) {
  // The pairs within a random subset of m tokens: an unbiased estimate of the row's mean term.
  std::mt19937 rng(2);
  std::normal_distribution<float> nd(0, 1);
  const size_t n = 197, m = 64;
  const double subset_pairs = m * (m - 1) / 2.0, all_pairs = n * (n - 1) / 2.0;
  double rel_sum = 0;
  const int rows = 60;
  for (int r = 0; r < rows; ++r) {
    std::vector<float> a(n), q(n), scratch(ranking_scratch_size(m));
    for (size_t i = 0; i < n; ++i) {
      a[i] = nd(rng);
      q[i] = a[i] + 0.25f * nd(rng);
    }
    const double exact_mean = naive(a, q, 0.2) / all_pairs;
    RankOrder ro = rank_order_subset(a.data(), n, m, uint64_t(r));
    ASSERT_EQ(ro.order.size(), m);
    std::vector<float> sa, sq;  // the subset, checked against the naive formula on it
    for (uint16_t i : ro.order) {
      ASSERT_LT(i, n);
      sa.push_back(a[i]);
      sq.push_back(q[i]);
    }
    EXPECT_NEAR(ranking_loss_sorted(ro, q.data(), 0.2f, scratch.data()), naive(sa, sq, 0.2), 1e-4 * naive(sa, sq, 0.2));
    const double est_mean = ranking_loss_sorted(ro, q.data(), 0.2f, scratch.data()) / subset_pairs;
    rel_sum += (est_mean - exact_mean) / exact_mean;
    EXPECT_NEAR(est_mean, exact_mean, 0.35 * exact_mean);  // one row: a sample of 64 of 197 tokens
  }
  EXPECT_LT(std::fabs(rel_sum / rows), 0.05);  // unbiased: the errors average out over rows
  // The subset is a deterministic function of the seed, and m >= n gives the exact order.
  EXPECT_EQ(rank_order_subset(std::vector<float>(n, 1.0f).data(), n, m, 9).order,
            rank_order_subset(std::vector<float>(n, 1.0f).data(), n, m, 9).order);
  std::vector<float> a(n);
  for (size_t i = 0; i < n; ++i) a[i] = float(i % 7);
  EXPECT_EQ(rank_order_subset(a.data(), n, n, 3).order, rank_order(a.data(), n).order);
}

}  // namespace
}  // namespace vitq
