// The exact bit allocation against brute force over all assignments.
#include <gtest/gtest.h>

#include <random>

#include "quant/mixed_precision.h"

namespace vitq {
namespace {

TEST(MixedPrecision, AllocationEqualsBruteForceAndRespectsTheBudget) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u(0, 1);
  for (int trial = 0; trial < 200; ++trial) {
    const int modules = 1 + int(rng() % 6), cands = 1 + int(rng() % 4);
    std::vector<int> bits;
    for (int k = 0; k < cands; ++k) bits.push_back(4 + k);
    std::vector<std::vector<double>> cost(static_cast<size_t>(modules));
    std::vector<std::vector<int64_t>> size(static_cast<size_t>(modules));
    int64_t uniform = 0;
    for (int m = 0; m < modules; ++m) {
      const int64_t params = 1 + int64_t(rng() % 5) * (rng() % 2 ? 1 : 3);
      uniform += params * bits[size_t(cands / 2)];
      for (int k = 0; k < cands; ++k) {
        // Cost falls with bits (as quantization noise does), with random sensitivities.
        cost[size_t(m)].push_back(u(rng) * 10 / double(1 << (2 * k)) + (trial % 3 == 0 ? u(rng) : 0.0));
        size[size_t(m)].push_back(params * bits[size_t(k)]);
      }
    }
    // Brute force over every assignment.
    double best = 1e300;
    int64_t total = 1;
    for (int m = 0; m < modules; ++m) total *= cands;
    for (int64_t code = 0; code < total; ++code) {
      int64_t c = code, sz = 0;
      double om = 0;
      for (int m = 0; m < modules; ++m) {
        const int k = int(c % cands);
        c /= cands;
        sz += size[size_t(m)][size_t(k)];
        om += cost[size_t(m)][size_t(k)];
      }
      if (sz <= uniform) best = std::min(best, om);
    }
    const AllocationPoint got = allocate_bits(cost, size, uniform);
    ASSERT_EQ(got.choice.size(), size_t(modules));
    int64_t sz = 0;
    double om = 0;
    for (int m = 0; m < modules; ++m) {
      sz += size[size_t(m)][size_t(got.choice[size_t(m)])];
      om += cost[size_t(m)][size_t(got.choice[size_t(m)])];
    }
    EXPECT_LE(sz, uniform) << "trial " << trial;
    EXPECT_EQ(sz, got.size);
    EXPECT_NEAR(om, got.omega, 1e-9);
    EXPECT_NEAR(got.omega, best, 1e-9) << "trial " << trial;
    // The frontier is strictly improving in Ω as size grows.
    auto front = pareto_frontier(cost, size, uniform);
    for (size_t i = 1; i < front.size(); ++i) {
      EXPECT_GT(front[i].size, front[i - 1].size);
      EXPECT_LT(front[i].omega, front[i - 1].omega);
    }
  }
}

}  // namespace
}  // namespace vitq
