// Per-token quantization (numerics/quantizer.h token_quant) on rows that lie on a lattice: the
// codes must not depend on the last bit of any value. Rows like these are what P·V gives when an
// attention probability is 1 and V has 4-bit codes (small multiples of V's step); without the
// step's tie-breaking stretch their zero point mn/Δ is a half-integer whenever mn = −mx (−7.5 at
// 4 bits), and at clip ratio 1 every x/Δ can be one, so another engine's summation order picks
// the other code.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "numerics/quantizer.h"

namespace vitq {
namespace {

// The codes of one row: round_half_even(x/Δ) clipped to the row's [lo, lo + 2^b − 1], as
// quantizer.h defines them (written out here, not the library's code_f).
std::vector<int32_t> codes(const std::vector<float>& row, int bits, float clip) {
  const TokenQuant t = token_quant(row.data(), row.size(), bits, clip);
  const QRange r = t.range(bits);
  std::vector<int32_t> q(row.size());
  for (size_t k = 0; k < row.size(); ++k)
    q[k] = std::clamp(int32_t(std::nearbyint(row[k] / t.delta)), r.lo, r.hi);
  return q;
}

TEST(TokenQuant, LatticeRowsKeepTheirCodesUnderOneUlpMoves) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> small(-8, 8), coin(0, 1);
  std::uniform_real_distribution<float> unit_exp(-8.0f, 4.0f);
  size_t rows = 0, moved = 0;
  for (int trial = 0; trial < 4000; ++trial) {
    const int n = trial % 2 ? 32 : 16;
    // The lattice unit: a power of two (every product exact, the worst case) or any float.
    const float u = trial % 3 ? std::exp2(std::round(unit_exp(rng))) : std::exp2(unit_exp(rng));
    std::vector<float> row(static_cast<size_t>(n));
    for (auto& v : row) v = float(small(rng)) * u;
    if (trial % 4 == 0) {  // symmetric extremes: mn = −mx
      row[0] = -8.0f * u;
      row[1] = 8.0f * u;
    }
    for (int bits : {4, 6, 8})
      for (float clip : {1.0f, 0.95f}) {
        const std::vector<int32_t> want = codes(row, bits, clip);
        for (int seed = 0; seed < 4; ++seed) {
          std::vector<float> near = row;
          for (auto& v : near) v = std::nextafter(v, coin(rng) ? INFINITY : -INFINITY);
          const std::vector<int32_t> got = codes(near, bits, clip);
          ++rows;
          if (got != want) ++moved;
        }
      }
  }
  EXPECT_EQ(moved, 0u) << moved << " of " << rows << " lattice rows changed a code under one-ulp moves";
}

TEST(TokenQuant, TheStretchedStepStillCoversTheRow) {
  // Δ = (mx − mn)/(2^b − 1)·(1 + 2⁻¹⁰): the levels [lo, lo + 2^b − 1]·Δ reach both extremes to
  // within half a step, so at clip ratio 1 no value is clipped by more than Δ/2.
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.3f, 2.0f);
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<float> row(64);
    for (auto& v : row) v = nd(rng);
    for (int bits : {2, 4, 8}) {
      const TokenQuant t = token_quant(row.data(), row.size(), bits, 1.0f);
      EXPECT_EQ(t.delta, (t.mx - t.mn) / float((1 << bits) - 1) * kTokenStepStretch);
      const std::vector<int32_t> q = codes(row, bits, 1.0f);
      for (size_t k = 0; k < row.size(); ++k)
        ASSERT_LE(std::fabs(float(q[k]) * t.delta - row[k]), 0.5f * t.delta * (1.0f + 1e-5f))
            << "bits " << bits << " value " << row[k];
    }
  }
}

}  // namespace
}  // namespace vitq
