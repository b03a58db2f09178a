// The uniform symmetric quantizer of the paper (no zero point):
//     q = clip(round(x / Δ), −2^(b−1), 2^(b−1) − 1),   x̂ = q · Δ
// round() is round-half-to-even everywhere (simulation, search and the integer runtime),
// so that the simulated and the integer model agree bit for bit.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace vitq {

constexpr int kMinBits = 2, kMaxBits = 10;

inline int32_t qmax(int bits) { return (int32_t(1) << (bits - 1)) - 1; }
inline int32_t qmin(int bits) { return -(int32_t(1) << (bits - 1)); }

// The kind of an operand's grid:
//   Signed    uniform [−2^(b−1), 2^(b−1)−1] (the paper's)
//   Unsigned  uniform [0, 2^b − 1], for operands that are never negative (the softmax output)
//   Log2      levels 0 and 2^−e (FQ-ViT's log2 quantizer),
//   LogSqrt2  levels 0 and 2^−e/2 (RepQ-ViT's log√2 quantizer), and
//   Float     levels of a small unsigned float (b − 4 mantissa bits; numerics/level_grid.h), both
//             for operands in [0, 1] (the softmax output): codes are fixed-point values in units
//             of 2^−15, the operand's step is 2^−15.
// Uniform grids take a step Δ; level grids have a fixed table.
enum class Grid : uint8_t { Signed, Unsigned, Log2, Float, LogSqrt2 };
inline bool is_level_grid(Grid g) { return g == Grid::Log2 || g == Grid::Float || g == Grid::LogSqrt2; }
inline const char* grid_name(Grid g) {
  return g == Grid::Signed ? "signed" : g == Grid::Unsigned ? "unsigned" : g == Grid::Log2 ? "log2"
         : g == Grid::LogSqrt2 ? "logsqrt2" : "float";
}

struct QRange {
  int32_t lo, hi;
};
// The code range of a uniform grid (a level grid's codes lie in [0, 2^15]: level_grid.h).
inline QRange qrange(int bits, Grid g = Grid::Signed) {
  return g == Grid::Unsigned ? QRange{0, (int32_t(1) << bits) - 1} : QRange{qmin(bits), qmax(bits)};
}

// Round half to even in float: std::nearbyint in the FP environment's default rounding mode
// (FE_TONEAREST), which vitq never changes; tests check the ties.
inline float round_half_even(float v) { return std::nearbyint(v); }

// Integer code of x for step `delta` (> 0): clip(round(x / Δ), lo, hi). The rounding of the true
// quotient (x · (1/Δ) can land on the other side of a .5 tie); every quantizing code path of vitq
// computes exactly this expression (the AVX-512 kernels by the product where they can prove it
// rounds alike, numerics/int8_kernels_avx512.cpp).
// code_f is that code as a float (lo, hi = the range as floats), for the vectorised loops.
__attribute__((always_inline)) inline float code_f(float x, float delta, float lo, float hi) {
  const float q = round_half_even(x / delta);
  return q < lo ? lo : (q > hi ? hi : q);
}
inline int32_t quantize_one(float x, float delta, QRange r) {
  return int32_t(code_f(x, delta, float(r.lo), float(r.hi)));
}

// x̂ = q(x) · Δ for n values (fake quantization), vectorised.
void fake_quantize(const float* x, float* y, size_t n, float delta, QRange r);
// Integer codes into int8 / uint8 / int16 storage (the range must fit the type).
void quantize_to_i8(const float* x, int8_t* q, size_t n, float delta, QRange r);
void quantize_to_u8(const float* x, uint8_t* q, size_t n, float delta, QRange r);
void quantize_to_i16(const float* x, int16_t* q, size_t n, float delta, QRange r);
// Integer codes stored as floats (for bit-widths whose products a float GEMM takes).
void quantize_to_f32_codes(const float* x, float* q, size_t n, float delta, QRange r);

// Per-token (dynamic, asymmetric) quantization of one row of n values at b bits, computed at run
// time from the row itself: with mn = min(min_k x_k, 0) and mx = max(max_k x_k, 0),
//     Δ = (mx − mn) / (2^b − 1) · s   (1 for an all-zero row),   lo = nearbyint(mn / Δ),
// and the codes clip(round(x / Δ), lo, lo + 2^b − 1): 2^b levels that cover [mn, mx], zero among
// them. The A-side encoding is u = code − lo in [0, 2^b − 1] (zero point −lo). With a clip ratio
// α < 1 (the plan's token_clip) the range is [α·mn, α·mx]: the row's extremes clip.
// s = kTokenStepStretch = 1 + 2⁻¹⁰ keeps both roundings away from ties. Without it, a row on a
// lattice (P·V when one attention probability is 1 and V has 4-bit codes: small multiples of V's
// step; GELU table outputs) puts mn/Δ = (2^b − 1)·mn/(mx − mn) exactly on a half-integer whenever
// its extremes are in such a ratio (mn = −mx: −7.5 at 4 bits), whatever the clip ratio, and at
// α = 1 every x/Δ = (2^b − 1)·x/(mx − mn) too; another engine's last-bit difference in the row
// (a different summation order) then picks the other code. With s, a half-integer ratio r lands
// at r/s, 2⁻¹¹·r away from the tie — far beyond a float's rounding error — and the levels still
// cover [mn, mx] (Δ only grows, by 0.1 %).
inline constexpr float kTokenStepStretch = 1.0f + 1.0f / 1024.0f;
struct TokenQuant {
  float delta;
  int32_t lo;
  float mn, mx;  // the range the levels cover: α·min(min_k x_k, 0), α·max(max_k x_k, 0)
  QRange range(int bits) const { return {lo, lo + (int32_t(1) << bits) - 1}; }
};
TokenQuant token_quant(const float* x, size_t n, int bits, float clip = 1.0f);
// The same from the row's mn = min(min_k x_k, 0) and mx = max(max_k x_k, 0), already found.
TokenQuant token_quant_of_range(float mn, float mx, int bits, float clip = 1.0f);

// The max-based step Δ₀ = max|x| / hi (a tiny positive value for all-zero input).
float max_abs(const float* x, size_t n);
float max_step(float max_abs_value, QRange r);

// Per-token symmetric step (the Q and K rows of matmul_qk with "granularity": "token", plan.h):
// Δ = max_step(max|x|, r) · kTokenStepStretch, the codes clip(round(x / Δ), r.lo, r.hi) on the
// operand's signed grid. Zero is the zero point, so Q's row steps and Kᵀ's column steps factor
// out of Q·Kᵀ: S[i][j] = Δq_i · Δk_j · Σ_d q̂[i][d]·k̂[j][d]. The stretch keeps x / Δ off ties as
// for the asymmetric rows above (a row's extreme lands on hi / s, not hi).
float token_step_symmetric(const float* x, size_t n, QRange r);

}  // namespace vitq
