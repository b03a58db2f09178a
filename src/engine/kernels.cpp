#include "engine/kernels.h"

#include <cmath>
#include <cstdint>
#include <bit>

#include "numerics/multiversion.h"

namespace vitq {
namespace {

// e^x = 2^n · e^r with n = round(x / ln 2), |r| <= ln2 / 2; e^r by its degree-7 Taylor
// polynomial (truncation < 6e-9 relative), 2^n assembled in the exponent bits. Below −87
// (where e^x is subnormal in float) the result is 0.
inline float exp_inline(float x) {
  const bool underflow = x < -87.0f;
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = std::nearbyint(x * 1.44269504088896341f);  // (floor(x+0.5) blocks vectorisation)
  float r = x - n * 0.693145751953125f;  // ln2 split in a high part exact in float...
  r = r - n * 1.42860682030941723212e-6f;  // ...and the low part
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  const float e = p * std::bit_cast<float>(bits);  // 2^n (bit_cast, unlike memcpy, vectorises)
  return underflow ? 0.0f : e;
}

// erf: Maclaurin series up to x^13 for |x| < 0.5 (truncation < 2e-9), and Abramowitz &
// Stegun 7.1.26 (|error| <= 1.5e-7) above; odd symmetry. Both are computed and one is
// selected, which keeps the loop vectorisable.
inline float erf_inline(float x) {
  const float ax = std::fabs(x);
  const float t = 1.0f / (1.0f + 0.3275911f * ax);
  float p = 1.061405429f;
  p = p * t - 1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t - 0.284496736f;
  p = p * t + 0.254829592f;
  const float big = 1.0f - p * t * exp_inline(-ax * ax);
  const float z = ax * ax;
  float s = -1.0f / 9360.0f;
  s = s * z + 1.0f / 1320.0f;
  s = s * z - 1.0f / 216.0f;
  s = s * z + 1.0f / 42.0f;
  s = s * z - 1.0f / 10.0f;
  s = s * z + 1.0f / 3.0f;
  s = s * z - 1.0f;
  const float small = -1.1283791670955126f * ax * s;  // 2/√π · (x − x³/3 + x⁵/10 − ...)
  const float y = ax < 0.5f ? small : big;
  return x < 0.0f ? -y : y;
}

}  // namespace

float exp_approx(float x) { return exp_inline(x); }
float erf_approx(float x) { return erf_inline(x); }

VITQ_MULTIVERSION
void layernorm_rows(const float* x, float* y, size_t rows, size_t n, const float* gamma, const float* beta,
                    float eps) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (size_t j = 0; j < n; ++j) sum += xr[j];
    const float mean = sum / static_cast<float>(n);
    float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
    for (size_t j = 0; j < n; ++j) {
      const float d = xr[j] - mean;
      sq += d * d;
    }
    const float rstd = 1.0f / std::sqrt(sq / static_cast<float>(n) + eps);
#pragma omp simd
    for (size_t j = 0; j < n; ++j) yr[j] = (xr[j] - mean) * rstd * gamma[j] + beta[j];
  }
}

void layernorm_rows_ref(const float* x, float* y, size_t rows, size_t n, const float* gamma, const float* beta,
                        float eps) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    double mean = 0, var = 0;
    for (size_t j = 0; j < n; ++j) mean += xr[j];
    mean /= double(n);
    for (size_t j = 0; j < n; ++j) var += (xr[j] - mean) * (xr[j] - mean);
    var /= double(n);
    const double rstd = 1.0 / std::sqrt(var + eps);
    for (size_t j = 0; j < n; ++j) y[r * n + j] = static_cast<float>((xr[j] - mean) * rstd * gamma[j] + beta[j]);
  }
}

VITQ_MULTIVERSION
void softmax_rows(float* s, size_t rows, size_t n, float scale) {
  for (size_t r = 0; r < rows; ++r) {
    float* sr = s + r * n;
    float mx = sr[0];
#pragma omp simd reduction(max : mx)
    for (size_t j = 0; j < n; ++j) mx = sr[j] > mx ? sr[j] : mx;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (size_t j = 0; j < n; ++j) {
      const float e = exp_inline((sr[j] - mx) * scale);
      sr[j] = e;
      sum += e;
    }
    const float inv = 1.0f / sum;
#pragma omp simd
    for (size_t j = 0; j < n; ++j) sr[j] *= inv;
  }
}

void softmax_rows_ref(float* s, size_t rows, size_t n, float scale) {
  for (size_t r = 0; r < rows; ++r) {
    float* sr = s + r * n;
    double mx = sr[0];
    for (size_t j = 0; j < n; ++j) mx = std::max<double>(mx, sr[j]);
    double sum = 0;
    for (size_t j = 0; j < n; ++j) sum += std::exp((sr[j] - mx) * scale);
    for (size_t j = 0; j < n; ++j) sr[j] = static_cast<float>(std::exp((sr[j] - mx) * scale) / sum);
  }
}

VITQ_MULTIVERSION
void bias_gelu_rows(float* x, size_t rows, size_t n, const float* bias) {
  for (size_t r = 0; r < rows; ++r) {
    float* xr = x + r * n;
    if (bias) {
#pragma omp simd
      for (size_t j = 0; j < n; ++j) {
        const float v = xr[j] + bias[j];
        xr[j] = 0.5f * v * (1.0f + erf_inline(v * 0.70710678118654752f));
      }
    } else {
#pragma omp simd
      for (size_t j = 0; j < n; ++j) {
        const float v = xr[j];
        xr[j] = 0.5f * v * (1.0f + erf_inline(v * 0.70710678118654752f));
      }
    }
  }
}

void bias_gelu_rows_ref(float* x, size_t rows, size_t n, const float* bias) {
  for (size_t r = 0; r < rows; ++r)
    for (size_t j = 0; j < n; ++j) {
      const double v = double(x[r * n + j]) + (bias ? bias[j] : 0.0);
      x[r * n + j] = static_cast<float>(0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))));
    }
}

VITQ_MULTIVERSION
void gelu_grad_mul(float* d, const float* h, size_t n) {
  constexpr float kInvSqrt2 = 0.70710678118654752f, kInvSqrt2Pi = 0.39894228040143267794f;
#pragma omp simd
  for (size_t j = 0; j < n; ++j) {
    const float v = h[j];
    d[j] *= 0.5f * (1.0f + erf_inline(v * kInvSqrt2)) + v * kInvSqrt2Pi * exp_inline(-0.5f * v * v);
  }
}

void gelu_grad_mul_ref(float* d, const float* h, size_t n) {
  const double pi = 3.14159265358979323846;
  for (size_t j = 0; j < n; ++j) {
    const double v = h[j];
    d[j] = static_cast<float>(d[j] * (0.5 * (1.0 + std::erf(v / std::sqrt(2.0))) + v * std::exp(-0.5 * v * v) / std::sqrt(2.0 * pi)));
  }
}

VITQ_MULTIVERSION
void add_bias_residual_rows(float* acc, const float* y, size_t rows, size_t n, const float* bias) {
  for (size_t r = 0; r < rows; ++r) {
    float* ar = acc + r * n;
    const float* yr = y + r * n;
    if (bias) {
#pragma omp simd
      for (size_t j = 0; j < n; ++j) ar[j] += yr[j] + bias[j];
    } else {
#pragma omp simd
      for (size_t j = 0; j < n; ++j) ar[j] += yr[j];
    }
  }
}

VITQ_MULTIVERSION
void add_bias_rows(float* y, size_t rows, size_t n, const float* bias) {
  for (size_t r = 0; r < rows; ++r) {
    float* yr = y + r * n;
#pragma omp simd
    for (size_t j = 0; j < n; ++j) yr[j] += bias[j];
  }
}

}  // namespace vitq
