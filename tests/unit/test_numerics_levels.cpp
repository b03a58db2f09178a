// The level grids of the softmax output (numerics/level_grid.h): the tables against their
// definitions written out here, and the quantizer against a brute-force nearest-level search.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <vector>

#include "numerics/level_grid.h"

namespace vitq {
namespace {

std::vector<int32_t> sorted(std::set<int32_t> s) { return {s.begin(), s.end()}; }

TEST(LevelGrids, Log2LevelsArePowersOfTwoCappedByTheResolution) {
  EXPECT_EQ(LevelGrid::get(Grid::Log2, 2).levels(), (std::vector<int32_t>{0, 8192, 16384, 32768}));
  for (int bits : {3, 4, 5, 8, 10}) {
    std::set<int32_t> want{0};
    const int n = std::min((1 << bits) - 1, 16);  // 2^0 .. 2^-(n-1), at most down to 2^-15
    for (int e = 0; e < n; ++e) want.insert(32768 >> e);
    EXPECT_EQ(LevelGrid::get(Grid::Log2, bits).levels(), sorted(want)) << bits;
  }
  EXPECT_EQ(LevelGrid::get(Grid::Log2, 4).levels().size(), 16u);  // every 4-bit code used
}

TEST(LevelGrids, LogSqrt2LevelsAreHalfOctavesCappedByTheResolution) {
  // 2^15 · 2^(-e/2): even e exact powers of two, odd e the nearest integer to 2^(15-(e+1)/2)·√2
  // (written out: 23170.48 → 23170, 11585.24 → 11585, ..., 2.83 → 3, 1.41 → 1, a repeat of e = 30).
  const std::vector<int32_t> odd{23170, 11585, 5793, 2896, 1448, 724, 362, 181, 91, 45, 23, 11, 6, 3, 1};
  std::vector<int32_t> all;  // descending, distinct
  for (int e = 0; e <= 30; ++e) {
    const int32_t l = e % 2 == 0 ? (32768 >> (e / 2)) : odd[size_t(e / 2)];
    if (all.empty() || l < all.back()) all.push_back(l);
  }
  ASSERT_EQ(all.size(), 30u);
  for (int bits : {2, 3, 4, 5, 6, 8}) {
    const size_t n = std::min(all.size(), (size_t(1) << bits) - 1);
    std::set<int32_t> want(all.begin(), all.begin() + std::ptrdiff_t(n));
    want.insert(0);
    EXPECT_EQ(LevelGrid::get(Grid::LogSqrt2, bits).levels(), sorted(want)) << bits;
  }
  EXPECT_EQ(LevelGrid::get(Grid::LogSqrt2, 4).levels().front(), 0);
  EXPECT_EQ(LevelGrid::get(Grid::LogSqrt2, 4).levels()[1], 256);  // 15 levels: 2^0 .. 2^-7
}

TEST(LevelGrids, FloatLevelsHaveTheirMantissaStepsPerOctave) {
  // 5 bits, one mantissa bit: 2^(15-e) and 1.5·2^(14-e) per octave while exact, then 2 and 1.
  std::set<int32_t> want{0, 1, 2};
  for (int e = 0; e <= 13; ++e) want.insert(32768 >> e), want.insert(3 << (13 - e));
  EXPECT_EQ(LevelGrid::get(Grid::Float, 5).levels(), sorted(want));
  // At 4 bits and below it is the log2 grid.
  EXPECT_EQ(LevelGrid::get(Grid::Float, 4).levels(), LevelGrid::get(Grid::Log2, 4).levels());
  for (int bits : {6, 7, 8}) {
    const int M = bits - 4;
    const auto& L = LevelGrid::get(Grid::Float, bits).levels();
    EXPECT_LE(L.size(), size_t(1) << bits);
    EXPECT_EQ(L.front(), 0);
    EXPECT_EQ(L.back(), 32768);
    // Octave (2^14, 2^15]: 2^M equal steps of 2^(14-M), exactly.
    std::vector<int32_t> top(L.end() - (1 << M) - 1, L.end());
    for (size_t i = 1; i < top.size(); ++i) EXPECT_EQ(top[i] - top[i - 1], 1 << (14 - M)) << bits;
    // Below the octaves the fixed point resolves, every integer is a level.
    for (int32_t v = 0; v <= 8; ++v) EXPECT_TRUE(std::binary_search(L.begin(), L.end(), v)) << bits << " " << v;
    // Strictly ascending.
    EXPECT_TRUE(std::adjacent_find(L.begin(), L.end(), std::greater_equal<int32_t>()) == L.end());
  }
}

TEST(LevelGrids, QuantizingPicksTheNearestLevelOfTheFixedPointValue) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(0, 1);
  for (Grid g : {Grid::Log2, Grid::LogSqrt2, Grid::Float})
    for (int bits : {3, 4, 6, 8}) {
      const LevelGrid& lg = LevelGrid::get(g, bits);
      auto nearest = [&](double v) {
        int32_t best = 0;
        for (int32_t l : lg.levels())
          if (std::fabs(l - v) <= std::fabs(best - v)) best = l;  // ascending: ties go to the larger
        return best;
      };
      for (int32_t v = 0; v <= 32768; ++v) ASSERT_EQ(lg.of_fixed(v), nearest(v)) << bits << " " << v;
      std::vector<float> p(4096);
      for (auto& x : p) x = u(rng) * u(rng) * u(rng);
      p[0] = 0, p[1] = 1, p[2] = 1.5f, p[3] = -0.25f, p[4] = std::nanf("");
      std::vector<float> f(p.size());
      std::vector<uint8_t> lo(p.size()), hi(p.size());
      quantize_levels_f32(p.data(), f.data(), p.size(), lg);
      quantize_levels_u8_split(p.data(), lo.data(), hi.data(), p.size(), lg);
      for (size_t i = 0; i < p.size(); ++i) {
        const double v = std::isnan(p[i]) ? 0 : std::clamp(std::nearbyint(double(p[i]) * 32768), 0.0, 32768.0);
        ASSERT_EQ(f[i], float(nearest(v))) << p[i];
        ASSERT_EQ(lo[i] + 256 * hi[i], nearest(v)) << p[i];
      }
    }
}

// The vectorised arithmetic form of the Log2 and Float grids (the runtime's fast path) against the
// table, on every fixed-point value, on values between them (ties of the scaling) and on values
// outside [0, 1]; and it is in use for every width, so the runtime does not fall back silently.
TEST(LevelGrids, ArithmeticFormEqualsTheTableEverywhere) {
  for (Grid g : {Grid::Log2, Grid::Float})
    for (int bits = 2; bits <= 10; ++bits) {
      const LevelGrid& lg = LevelGrid::get(g, bits);
      ASSERT_TRUE(lg.arithmetic()) << grid_name(g) << " " << bits;
      std::vector<float> p;
      for (int32_t v = 0; v <= 32768; ++v) {
        p.push_back(float(v) / 32768.0f);
        p.push_back((float(v) + 0.5f) / 32768.0f);  // exact .5 after the scaling: ties to even
        p.push_back(std::nextafter(float(v) / 32768.0f, 2.0f));
      }
      for (float x : {-1.0f, -0.0f, 1.0f, 2.0f, 1e30f, -1e30f, std::nanf(""), std::numeric_limits<float>::infinity()})
        p.push_back(x);
      std::vector<float> f(p.size());
      std::vector<uint8_t> lo(p.size()), hi(p.size());
      quantize_levels_f32(p.data(), f.data(), p.size(), lg);
      quantize_levels_u8_split(p.data(), lo.data(), hi.data(), p.size(), lg);
      for (size_t i = 0; i < p.size(); ++i) {
        ASSERT_EQ(f[i], float(lg.of(p[i]))) << grid_name(g) << " " << bits << " p " << p[i];
        ASSERT_EQ(lo[i] + 256 * hi[i], lg.of(p[i])) << grid_name(g) << " " << bits << " p " << p[i];
      }
    }
  EXPECT_FALSE(LevelGrid::get(Grid::LogSqrt2, 6).arithmetic());  // not uniform within octaves: the table
}

}  // namespace
}  // namespace vitq
