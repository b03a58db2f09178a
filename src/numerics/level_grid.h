// The level grids (quantizer.h: Grid::Log2, Grid::LogSqrt2, Grid::Float) for operands in [0, 1] — the softmax
// output. A value p is represented by a level: an integer in [0, 2^15] (units of 2^−15), so
// p̂ = level · 2^−15. The levels of b bits, largest first:
//   Log2   2^15, 2^14, ..., 2^(15 − e) for e < min(2^b − 1, 16), then 0
//          (FQ-ViT's log2 quantizer: 2^−e, capped by the fixed-point resolution);
//   LogSqrt2  the distinct nonzero values of nearbyint(2^15 · 2^(−e/2)), e = 0, 1, ..., at most
//          2^b − 1 of them, then 0 (RepQ-ViT's log√2 quantizer; 31 nonzero levels at most);
//   Float  the 2^b − 1 largest distinct values of nearbyint(2^15 · 2^−e · (1 − m / 2^(M+1))),
//          e ≥ 0, m ∈ [0, 2^M), M = max(b − 4, 0) mantissa bits — a small float on [0, 1]
//          (uniform within each octave (2^−e−1, 2^−e], 2^M steps per octave; below the
//          fixed-point resolution every integer), then 0. At b ≤ 4 it is Log2.
// Quantizing: v = clip(nearbyint(p · 2^15), 0, 2^15) (an exact scaling), then the level nearest
// to v (ties to the larger level). Simulation and the integer runtime use the same table, so
// both get the same levels; P·V then runs on levels as 16-bit A operands (two u8 planes).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "numerics/quantizer.h"

namespace vitq {

constexpr int kLevelFracBits = 15;
constexpr int32_t kLevelOne = int32_t(1) << kLevelFracBits;
constexpr float kLevelStep = 1.0f / float(kLevelOne);  // the step of a level grid

class LevelGrid {
 public:
  // The table of a level grid at `bits` (2..10), built once and shared.
  static const LevelGrid& get(Grid g, int bits);

  const std::vector<int32_t>& levels() const { return levels_; }  // ascending; 0 first, 2^15 last
  // True if the vectorised arithmetic form gives this table's level for every fixed-point value
  // (checked exhaustively when the grid is built; Log2 and Float grids): above the smallest
  // nonzero level l₁, the levels of an octave [2^E, 2^(E+1)] are uniform with step 2^max(E−M, 0)
  // (M mantissa bits: Float max(b − 4, 0), Log2 0), so the nearest one (ties up) is
  // 2^E + ⌊(v − 2^E + s/2) / s⌋·s; below l₁ it is l₁ if 2v ≥ l₁, else 0. quantize_levels_* use it
  // then; the table is the reference.
  bool arithmetic() const { return arith_; }
  // The level of fixed-point value v ∈ [0, 2^15].
  uint16_t of_fixed(int32_t v) const { return lookup_[size_t(v)]; }
  // The level of p (NaN: 0).
  uint16_t of(float p) const {
    const float v = round_half_even(p * float(kLevelOne));  // exact scaling by a power of two
    const int32_t i = !(v > 0.0f) ? 0 : (v >= float(kLevelOne) ? kLevelOne : int32_t(v));
    return lookup_[size_t(i)];
  }

 private:
  LevelGrid(Grid g, int bits);
  std::vector<int32_t> levels_;
  std::vector<uint16_t> lookup_;  // 2^15 + 1 entries
  bool arith_ = false;
  int mant_ = 0;       // M of the arithmetic form
  int32_t lmin_ = 0;   // l₁, the smallest nonzero level
  friend void quantize_levels_f32(const float*, float*, size_t, const LevelGrid&);
  friend void quantize_levels_u8_split(const float*, uint8_t*, uint8_t*, size_t, const LevelGrid&);
};

// Levels of n values: as floats (the simulator multiplies them), or as the two u8 planes of the
// integer runtime's A operand (lo = level & 255, hi = level >> 8).
void quantize_levels_f32(const float* p, float* levels, size_t n, const LevelGrid& g);
void quantize_levels_u8_split(const float* p, uint8_t* lo, uint8_t* hi, size_t n, const LevelGrid& g);

}  // namespace vitq
