#include "numerics/quantizer.h"

#include <algorithm>

#include "numerics/multiversion.h"

namespace vitq {

VITQ_MULTIVERSION
void fake_quantize(const float* x, float* y, size_t n, float delta, QRange r) {
  const float lo = float(r.lo), hi = float(r.hi);
#pragma omp simd
  for (size_t i = 0; i < n; ++i) {
    float q = std::nearbyint(x[i] / delta);
    q = q < lo ? lo : (q > hi ? hi : q);
    y[i] = q * delta;
  }
}

VITQ_MULTIVERSION
void quantize_to_i8(const float* x, int8_t* q, size_t n, float delta, QRange r) {
  const float lo = float(r.lo), hi = float(r.hi);
#pragma omp simd
  for (size_t i = 0; i < n; ++i) {
    float v = std::nearbyint(x[i] / delta);
    v = v < lo ? lo : (v > hi ? hi : v);
    q[i] = int8_t(v);
  }
}

VITQ_MULTIVERSION
void quantize_to_u8(const float* x, uint8_t* q, size_t n, float delta, QRange r) {
  const float lo = float(r.lo), hi = float(r.hi);
#pragma omp simd
  for (size_t i = 0; i < n; ++i) {
    float v = std::nearbyint(x[i] / delta);
    v = v < lo ? lo : (v > hi ? hi : v);
    q[i] = uint8_t(v);
  }
}

VITQ_MULTIVERSION
void quantize_to_i16(const float* x, int16_t* q, size_t n, float delta, QRange r) {
  const float lo = float(r.lo), hi = float(r.hi);
#pragma omp simd
  for (size_t i = 0; i < n; ++i) {
    float v = std::nearbyint(x[i] / delta);
    v = v < lo ? lo : (v > hi ? hi : v);
    q[i] = int16_t(v);
  }
}

VITQ_MULTIVERSION
void quantize_to_f32_codes(const float* x, float* q, size_t n, float delta, QRange r) {
  const float lo = float(r.lo), hi = float(r.hi);
#pragma omp simd
  for (size_t i = 0; i < n; ++i) {
    float v = std::nearbyint(x[i] / delta);
    q[i] = v < lo ? lo : (v > hi ? hi : v);
  }
}

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

float max_step(float max_abs_value, QRange r) {
  return std::max(max_abs_value, 1e-12f) / float(r.hi);
}

}  // namespace vitq
