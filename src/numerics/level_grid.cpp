#include "numerics/level_grid.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <mutex>

#include "numerics/multiversion.h"

namespace vitq {

namespace {

// 2^15 · 2^(−e/2) rounded to the nearest integer: for odd e, 2^(15 − (e+1)/2) · √2 with √2 correctly
// rounded (IEEE sqrt), so the table is the same on every machine.
int32_t log_sqrt2_level(int e) {
  const double v = e % 2 == 0 ? std::ldexp(1.0, kLevelFracBits - e / 2)
                              : std::ldexp(std::sqrt(2.0), kLevelFracBits - (e + 1) / 2);
  return int32_t(std::nearbyint(v));
}

// The positive levels of the grid, descending (see the header).
std::vector<int32_t> positive_levels(Grid g, int bits) {
  const size_t want_levels = (size_t(1) << bits) - 1;
  if (g == Grid::LogSqrt2) {
    std::vector<int32_t> out;
    for (int e = 0; out.size() < want_levels; ++e) {
      const int32_t l = log_sqrt2_level(e);
      if (l == 0) break;
      if (out.empty() || l < out.back()) out.push_back(l);
    }
    return out;
  }
  const int mant = g == Grid::Float ? std::max(bits - 4, 0) : 0;
  const size_t want = (size_t(1) << bits) - 1;
  std::vector<int32_t> out;
  for (int e = 0; out.size() < want; ++e) {
    for (int m = 0; m < (1 << mant) && out.size() < want; ++m) {
      // 2^15 · 2^−e · (1 − m / 2^(M+1)) = (2^(M+1) − m) · 2^(15 − e − M − 1), exact in double.
      const double v = std::ldexp(double((1 << (mant + 1)) - m), kLevelFracBits - e - mant - 1);
      const int32_t l = int32_t(std::nearbyint(v));
      if (l == 0) return out;
      if (out.empty() || l < out.back()) out.push_back(l);
    }
  }
  return out;
}

// The arithmetic form (level_grid.h, LevelGrid::arithmetic) of one value. Integer operations
// only after the exact scaling, so every clone of the loops below gives the same levels.
__attribute__((always_inline)) inline int32_t arith_level(float p, int mant, int32_t lmin) {
  const float t = round_half_even(p * float(kLevelOne));  // exact scaling by a power of two
  const float tp = t > 0.0f ? t : 0.0f;                    // NaN: 0
  const int32_t v = int32_t(tp < float(kLevelOne) ? tp : float(kLevelOne));
  // ⌊log2 v⌋ (0 for v = 0): a count of leading zeros, which vectorises (AVX-512 CD's vplzcntd).
  const int32_t e = 31 - __builtin_clz(uint32_t(v) | 1u);
  const int32_t sh = e > mant ? e - mant : 0, base = int32_t(1) << e;
  const int32_t up = base + (((v - base + ((int32_t(1) << sh) >> 1)) >> sh) << sh);
  const int32_t below = 2 * v >= lmin ? lmin : 0;
  return v >= lmin ? up : below;
}

// ... of n values: as two u8 planes, or as floats.
VITQ_MULTIVERSION
void levels_arith_u8_split(const float* p, uint8_t* lo, uint8_t* hi, size_t n, int mant, int32_t lmin) {
#pragma omp simd
  for (size_t i = 0; i < n; ++i) {
    const int32_t l = arith_level(p[i], mant, lmin);
    lo[i] = uint8_t(l & 255);
    hi[i] = uint8_t(l >> 8);
  }
}

VITQ_MULTIVERSION
void levels_arith_f32(const float* p, float* out, size_t n, int mant, int32_t lmin) {
#pragma omp simd
  for (size_t i = 0; i < n; ++i) out[i] = float(arith_level(p[i], mant, lmin));
}

}  // namespace

LevelGrid::LevelGrid(Grid g, int bits) {
  levels_ = positive_levels(g, bits);
  levels_.push_back(0);
  std::reverse(levels_.begin(), levels_.end());
  lookup_.resize(size_t(kLevelOne) + 1);
  size_t i = 0;  // levels_[i] <= v < levels_[i + 1]
  for (int32_t v = 0; v <= kLevelOne; ++v) {
    while (i + 1 < levels_.size() && levels_[i + 1] <= v) ++i;
    if (i + 1 == levels_.size()) {
      lookup_[size_t(v)] = uint16_t(levels_[i]);
      continue;
    }
    const int32_t a = levels_[i], b = levels_[i + 1];
    lookup_[size_t(v)] = uint16_t(v - a < b - v ? a : b);  // ties to the larger level
  }
  // The arithmetic form, used only if it gives the table's level for every fixed-point value
  // (computed by the same vectorised function the quantizers call).
  if ((g == Grid::Float || g == Grid::Log2) && levels_.size() >= 2) {
    mant_ = g == Grid::Float ? std::max(bits - 4, 0) : 0;
    lmin_ = levels_[1];
    std::vector<float> p(size_t(kLevelOne) + 1), got(p.size());
    for (int32_t v = 0; v <= kLevelOne; ++v) p[size_t(v)] = float(v) * kLevelStep;
    levels_arith_f32(p.data(), got.data(), p.size(), mant_, lmin_);
    arith_ = true;
    for (int32_t v = 0; v <= kLevelOne && arith_; ++v) arith_ = got[size_t(v)] == float(lookup_[size_t(v)]);
  }
}

const LevelGrid& LevelGrid::get(Grid g, int bits) {
  static std::mutex mu;
  static std::map<std::pair<int, int>, std::unique_ptr<LevelGrid>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& p = cache[{int(g), bits}];
  if (!p) p.reset(new LevelGrid(g, bits));
  return *p;
}

void quantize_levels_f32(const float* p, float* levels, size_t n, const LevelGrid& g) {
  if (g.arith_) return levels_arith_f32(p, levels, n, g.mant_, g.lmin_);
  for (size_t i = 0; i < n; ++i) levels[i] = float(g.of(p[i]));
}

void quantize_levels_u8_split(const float* p, uint8_t* lo, uint8_t* hi, size_t n, const LevelGrid& g) {
  if (g.arith_) return levels_arith_u8_split(p, lo, hi, n, g.mant_, g.lmin_);
  for (size_t i = 0; i < n; ++i) {
    const uint16_t l = g.of(p[i]);
    lo[i] = uint8_t(l & 255);
    hi[i] = uint8_t(l >> 8);
  }
}

}  // namespace vitq
