#include "numerics/int8_kernels.h"

#include "numerics/int8_kernels_avx512.h"

#include <algorithm>
#include <cmath>

#include "numerics/multiversion.h"

namespace vitq {

namespace {

VITQ_MULTIVERSION
void quantize_a_u8_portable(const float* x, uint8_t* u, size_t n, float delta, QRange r, int32_t zp) {
  const float lo = float(r.lo), hi = float(r.hi);
#pragma omp simd
  for (size_t i = 0; i < n; ++i) {
    const float q = code_f(x[i], delta, lo, hi);
    u[i] = uint8_t(int32_t(q) + zp);
  }
}

VITQ_MULTIVERSION
int32_t quantize_b_s8_portable(const float* x, int8_t* q8, size_t n, float delta, QRange r) {
  const float lo = float(r.lo), hi = float(r.hi);
  int32_t sum = 0;
#pragma omp simd reduction(+ : sum)
  for (size_t i = 0; i < n; ++i) {
    const int32_t c = int32_t(code_f(x[i], delta, lo, hi));
    sum += c;
    q8[i] = int8_t(c);
  }
  return sum;
}

const bool kAvx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                     __builtin_cpu_supports("avx512vl");

}  // namespace

const std::vector<QuantizerVariant>& quantizer_variants() {
  static const std::vector<QuantizerVariant> v = {
      {"avx512", kAvx512, quantize_a_u8_avx512, quantize_b_s8_avx512},
      {"portable", true, quantize_a_u8_portable, quantize_b_s8_portable},
  };
  return v;
}

bool int8_kernels_use_avx512() { return kAvx512; }

void quantize_a_u8(const float* x, uint8_t* u, size_t n, float delta, QRange r, int32_t zp) {
  if (kAvx512) quantize_a_u8_avx512(x, u, n, delta, r, zp);
  else quantize_a_u8_portable(x, u, n, delta, r, zp);
}

int32_t quantize_b_s8(const float* x, int8_t* q, size_t n, float delta, QRange r) {
  return kAvx512 ? quantize_b_s8_avx512(x, q, n, delta, r) : quantize_b_s8_portable(x, q, n, delta, r);
}

void quantize_a_u8_ref(const float* x, uint8_t* u, size_t n, float delta, QRange r, int32_t zp) {
  for (size_t i = 0; i < n; ++i) u[i] = uint8_t(quantize_one(x[i], delta, r) + zp);
}

int32_t quantize_b_s8_ref(const float* x, int8_t* q, size_t n, float delta, QRange r) {
  int32_t s = 0;
  for (size_t i = 0; i < n; ++i) {
    q[i] = int8_t(quantize_one(x[i], delta, r));
    s += q[i];
  }
  return s;
}

VITQ_MULTIVERSION
int32_t quantize_a_u8_split(const float* x, uint8_t* lo_plane, uint8_t* hi_plane, size_t n, float delta, QRange r,
                            int32_t zp) {
  const float lo = float(r.lo), hi = float(r.hi);
  int32_t sum = 0;
#pragma omp simd reduction(+ : sum)
  for (size_t i = 0; i < n; ++i) {
    const int32_t c = int32_t(code_f(x[i], delta, lo, hi));
    sum += c;
    const int32_t v = c + zp;
    lo_plane[i] = uint8_t(v & 255);
    hi_plane[i] = uint8_t(v >> 8);
  }
  return sum;
}


VITQ_MULTIVERSION
int32_t quantize_b_s8_split(const float* x, int8_t* lo_plane, int8_t* hi_plane, size_t n, float delta, QRange r) {
  const float lo = float(r.lo), hi = float(r.hi);
  int32_t sum = 0;
#pragma omp simd reduction(+ : sum)
  for (size_t i = 0; i < n; ++i) {
    const int32_t c = int32_t(code_f(x[i], delta, lo, hi));
    sum += c;
    lo_plane[i] = int8_t(c & 127);
    hi_plane[i] = int8_t(c >> 7);  // arithmetic shift: floor(c / 128)
  }
  return sum;
}

VITQ_MULTIVERSION
void dequantize_row(const int32_t* acc, const int32_t* comp, const float* scale, const float* bias, float* y,
                    size_t n) {
  if (comp && bias) {
#pragma omp simd
    for (size_t j = 0; j < n; ++j) y[j] = float(acc[j] - comp[j]) * scale[j] + bias[j];
  } else if (comp) {
#pragma omp simd
    for (size_t j = 0; j < n; ++j) y[j] = float(acc[j] - comp[j]) * scale[j];
  } else if (bias) {
#pragma omp simd
    for (size_t j = 0; j < n; ++j) y[j] = float(acc[j]) * scale[j] + bias[j];
  } else {
#pragma omp simd
    for (size_t j = 0; j < n; ++j) y[j] = float(acc[j]) * scale[j];
  }
}

VITQ_MULTIVERSION
void dequantize_row_scalar(const int32_t* acc, const int32_t* comp, float scale, const float* bias, float* y,
                           size_t n) {
  if (comp && bias) {
#pragma omp simd
    for (size_t j = 0; j < n; ++j) y[j] = float(acc[j] - comp[j]) * scale + bias[j];
  } else if (comp) {
#pragma omp simd
    for (size_t j = 0; j < n; ++j) y[j] = float(acc[j] - comp[j]) * scale;
  } else if (bias) {
#pragma omp simd
    for (size_t j = 0; j < n; ++j) y[j] = float(acc[j]) * scale + bias[j];
  } else {
#pragma omp simd
    for (size_t j = 0; j < n; ++j) y[j] = float(acc[j]) * scale;
  }
}

VITQ_MULTIVERSION
void scale_bias_row(float* y, const float* scale, const float* bias, size_t n) {
  if (bias) {
#pragma omp simd
    for (size_t j = 0; j < n; ++j) y[j] = y[j] * scale[j] + bias[j];
  } else {
#pragma omp simd
    for (size_t j = 0; j < n; ++j) y[j] = y[j] * scale[j];
  }
}

VITQ_MULTIVERSION
void scale_bias_row_scalar(float* y, float scale, const float* bias, size_t n) {
  if (bias) {
#pragma omp simd
    for (size_t j = 0; j < n; ++j) y[j] = y[j] * scale + bias[j];
  } else {
#pragma omp simd
    for (size_t j = 0; j < n; ++j) y[j] = y[j] * scale;
  }
}

VITQ_MULTIVERSION
void dequantize_row_token(const int32_t* acc, int32_t zp, const int32_t* colsum, const float* wscale, float delta,
                          const float* bias, float* y, size_t n) {
  if (bias) {
#pragma omp simd
    for (size_t j = 0; j < n; ++j) y[j] = float(acc[j] - zp * colsum[j]) * (delta * wscale[j]) + bias[j];
  } else {
#pragma omp simd
    for (size_t j = 0; j < n; ++j) y[j] = float(acc[j] - zp * colsum[j]) * (delta * wscale[j]);
  }
}

VITQ_MULTIVERSION
void accumulate_token_group(float* t, const int32_t* acc, int32_t zp, const int32_t* colsum, float delta, bool first,
                            size_t n) {
  if (first && !colsum) {
#pragma omp simd
    for (size_t j = 0; j < n; ++j) t[j] = float(acc[j]) * delta;
  } else if (first) {
#pragma omp simd
    for (size_t j = 0; j < n; ++j) t[j] = float(acc[j] - zp * colsum[j]) * delta;
  } else if (!colsum) {
#pragma omp simd
    for (size_t j = 0; j < n; ++j) t[j] += float(acc[j]) * delta;
  } else {
#pragma omp simd
    for (size_t j = 0; j < n; ++j) t[j] += float(acc[j] - zp * colsum[j]) * delta;
  }
}

VITQ_MULTIVERSION
void scale_bias_row_token(float* y, const float* wscale, float delta, const float* bias, size_t n) {
  if (bias) {
#pragma omp simd
    for (size_t j = 0; j < n; ++j) y[j] = y[j] * (delta * wscale[j]) + bias[j];
  } else {
#pragma omp simd
    for (size_t j = 0; j < n; ++j) y[j] = y[j] * (delta * wscale[j]);
  }
}

VITQ_MULTIVERSION
void add_scaled_row(float* y, const float* v, float s, size_t n) {
#pragma omp simd
  for (size_t j = 0; j < n; ++j) y[j] += v[j] * s;
}

int64_t sum_u8(const uint8_t* u, size_t n) { return kAvx512 ? sum_u8_avx512(u, n) : sum_u8_portable(u, n); }

VITQ_MULTIVERSION
int64_t sum_u8_portable(const uint8_t* u, size_t n) {
  // 32-bit partial sums (exact for 2^24 values of at most 255), which vectorise far better than
  // a 64-bit reduction of bytes.
  int64_t s = 0;
  for (size_t c0 = 0; c0 < n; c0 += size_t(1) << 24) {
    const size_t c1 = std::min(n, c0 + (size_t(1) << 24));
    uint32_t t = 0;
#pragma omp simd reduction(+ : t)
    for (size_t i = c0; i < c1; ++i) t += u[i];
    s += int64_t(t);
  }
  return s;
}

VITQ_MULTIVERSION
uint8_t max_u8_rows(const uint8_t* a, size_t rows, size_t cols, size_t lda) {
  uint8_t m = 0;
  for (size_t i = 0; i < rows; ++i) {
    const uint8_t* r = a + i * lda;
#pragma omp simd reduction(max : m)
    for (size_t k = 0; k < cols; ++k) m = r[k] > m ? r[k] : m;
  }
  return m;
}

VITQ_MULTIVERSION
int max_abs_s8(const int8_t* b, size_t n) {
  int m = 0;
#pragma omp simd reduction(max : m)
  for (size_t i = 0; i < n; ++i) {
    const int v = b[i] < 0 ? -int(b[i]) : int(b[i]);
    m = v > m ? v : m;
  }
  return m;
}

VITQ_MULTIVERSION
void split_u8_lo7_hi1_rows(const uint8_t* a, size_t rows, size_t cols, size_t lda, uint8_t* lo_hi) {
  for (size_t i = 0; i < rows; ++i) {
    const uint8_t* r = a + i * lda;
    uint8_t* lo = lo_hi + i * cols;
    uint8_t* hi = lo_hi + (rows + i) * cols;
#pragma omp simd
    for (size_t k = 0; k < cols; ++k) {
      lo[k] = uint8_t(r[k] & 127);
      hi[k] = uint8_t(r[k] >> 7);
    }
  }
}

VITQ_MULTIVERSION
void add_shl7_i32_rows(int32_t* c, size_t ldc, const int32_t* c_hi, size_t ld_hi, size_t rows, size_t cols) {
  for (size_t i = 0; i < rows; ++i) {
    int32_t* cr = c + i * ldc;
    const int32_t* hr = c_hi + i * ld_hi;
#pragma omp simd
    for (size_t j = 0; j < cols; ++j) cr[j] += int32_t(uint32_t(hr[j]) << 7);
  }
}

VITQ_MULTIVERSION
void combine_two_a_planes_row(const int32_t* acc0, const int32_t* acc1, const int32_t* comp, float* out, size_t n) {
  if (comp) {
#pragma omp simd
    for (size_t j = 0; j < n; ++j) out[j] = float(int64_t(acc0[j]) + (int64_t(acc1[j]) << 8) - int64_t(comp[j]));
  } else {
#pragma omp simd
    for (size_t j = 0; j < n; ++j) out[j] = float(int64_t(acc0[j]) + (int64_t(acc1[j]) << 8));
  }
}

}  // namespace vitq
