#include "numerics/quantizer.h"

#include <algorithm>

#include "numerics/multiversion.h"

namespace vitq {

VITQ_MULTIVERSION
void fake_quantize(const float* x, float* y, size_t n, float delta, QRange r) {
  const float lo = float(r.lo), hi = float(r.hi);
#pragma omp simd
  for (size_t i = 0; i < n; ++i) y[i] = code_f(x[i], delta, lo, hi) * delta;
}

// The integer codes into each storage type: one loop, cloned per ISA.
#define VITQ_QUANTIZE_TO(NAME, T)                                           \
  VITQ_MULTIVERSION                                                         \
  void NAME(const float* x, T* q, size_t n, float delta, QRange r) {        \
    const float lo = float(r.lo), hi = float(r.hi);                         \
    _Pragma("omp simd") for (size_t i = 0; i < n; ++i) q[i] = T(code_f(x[i], delta, lo, hi)); \
  }
VITQ_QUANTIZE_TO(quantize_to_i8, int8_t)
VITQ_QUANTIZE_TO(quantize_to_u8, uint8_t)
VITQ_QUANTIZE_TO(quantize_to_i16, int16_t)
VITQ_QUANTIZE_TO(quantize_to_f32_codes, float)
#undef VITQ_QUANTIZE_TO

VITQ_MULTIVERSION
float max_abs(const float* x, size_t n) {
  float m = 0.0f;
#pragma omp simd reduction(max : m)
  for (size_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    m = a > m ? a : m;
  }
  return m;
}

VITQ_MULTIVERSION
TokenQuant token_quant(const float* x, size_t n, int bits, float clip) {
  float mn = 0.0f, mx = 0.0f;
#pragma omp simd reduction(min : mn) reduction(max : mx)
  for (size_t i = 0; i < n; ++i) {
    mn = x[i] < mn ? x[i] : mn;
    mx = x[i] > mx ? x[i] : mx;
  }
  return token_quant_of_range(mn, mx, bits, clip);
}

TokenQuant token_quant_of_range(float mn, float mx, int bits, float clip) {
  mn *= clip;
  mx *= clip;
  float delta = (mx - mn) / float((int32_t(1) << bits) - 1) * kTokenStepStretch;
  if (!(delta >= 1e-30f)) delta = 1.0f;  // an all-zero row (or a vanishing range): every code 0
  return {delta, int32_t(round_half_even(mn / delta)), mn, mx};
}

float max_step(float max_abs_value, QRange r) {
  return std::max(max_abs_value, 1e-12f) / float(r.hi);
}

float token_step_symmetric(const float* x, size_t n, QRange r) { return max_step(max_abs(x, n), r) * kTokenStepStretch; }

}  // namespace vitq
