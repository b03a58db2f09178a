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

// The kind of an operand's integer grid: uniform signed [−2^(b−1), 2^(b−1)−1] (the paper's),
// or uniform unsigned [0, 2^b − 1] for operands that are never negative (the softmax output; a
// vitq option). A new kind (e.g. a log-domain grid) is added here and in the plan's JSON.
enum class Grid : uint8_t { Signed, Unsigned };

struct QRange {
  int32_t lo, hi;
};
inline QRange qrange(int bits, Grid g = Grid::Signed) {
  return g == Grid::Unsigned ? QRange{0, (int32_t(1) << bits) - 1} : QRange{qmin(bits), qmax(bits)};
}

// Round half to even in float: std::nearbyint in the FP environment's default rounding mode
// (FE_TONEAREST), which vitq never changes; tests check the ties.
inline float round_half_even(float v) { return std::nearbyint(v); }

// Integer code of x for step `delta` (> 0): clip(round(x / Δ), lo, hi). A true division
// (not x · (1/Δ), which can land on the other side of a .5 tie); every quantizing code path
// of vitq computes exactly this expression.
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

// The max-based step Δ₀ = max|x| / hi (a tiny positive value for all-zero input).
float max_abs(const float* x, size_t n);
float max_step(float max_abs_value, QRange r);

}  // namespace vitq
