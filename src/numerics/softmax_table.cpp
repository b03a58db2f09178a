#include "numerics/softmax_table.h"

#include <cmath>
#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "numerics/int8_kernels.h"
#include "numerics/int8_kernels_avx2.h"
#include "numerics/int8_kernels_avx512.h"
#include "numerics/multiversion.h"

namespace vitq {

SoftmaxExpTable::SoftmaxExpTable(int b, float r) : bits(b), range(r) {
  if (b < 6 || b > 10) fail(ErrorKind::Internal, "softmax table: bits ", b, " outside [6, 10]");
  if (!(r > 0.0f) || !std::isfinite(r)) fail(ErrorKind::Internal, "softmax table: range ", r);
  const int last = (1 << b) - 1;
  inv_step = float(last) / r;
  const double step = double(r) / double(last);
  for (int k = 0; k < 32; ++k) {
    hi[k] = float(std::exp(-32.0 * k * step));
    lo[k] = float(std::exp(-double(k) * step));
  }
}

VITQ_MULTIVERSION
void softmax_table_rows_portable(float* s, size_t rows, size_t n, float scale, const SoftmaxExpTable& t) {
  const float k = scale * t.inv_step;
  for (size_t r = 0; r < rows; ++r) {
    float* sr = s + r * n;
    float mx = sr[0];
#pragma omp simd reduction(max : mx)
    for (size_t j = 0; j < n; ++j) mx = sr[j] > mx ? sr[j] : mx;
    float lane[16] = {};
    size_t j0 = 0;
    for (; j0 + 16 <= n; j0 += 16) {
#pragma omp simd
      for (size_t l = 0; l < 16; ++l) {
        const float e = t.exp_at(t.index((mx - sr[j0 + l]) * k));
        sr[j0 + l] = e;
        lane[l] += e;
      }
    }
    for (size_t l = 0; j0 + l < n; ++l) {
      const float e = t.exp_at(t.index((mx - sr[j0 + l]) * k));
      sr[j0 + l] = e;
      lane[l] += e;
    }
    // Fixed-order tree over the 16 lanes.
    for (size_t w = 8; w >= 1; w /= 2)
      for (size_t l = 0; l < w; ++l) lane[l] += lane[l + w];
    const float inv = 1.0f / lane[0];
#pragma omp simd
    for (size_t j = 0; j < n; ++j) sr[j] *= inv;
  }
}

namespace {

void softmax_table_codes_row_portable(float* s, size_t n, float scale, const SoftmaxExpTable& t, float delta,
                                      QRange r, int32_t zp, uint8_t* u) {
  softmax_table_rows_portable(s, 1, n, scale, t);
  quantize_a_u8(s, u, n, delta, r, zp);
}

}  // namespace

void softmax_table_codes_row(float* s, size_t n, float scale, const SoftmaxExpTable& t, float delta, QRange r,
                             int32_t zp, uint8_t* u) {
  if (int8_kernels_use_avx512()) softmax_table_codes_row_avx512(s, n, scale, t, delta, r, zp, u);
  else if (int8_kernels_avx2_available()) softmax_table_codes_row_avx2(s, n, scale, t, delta, r, zp, u);
  else softmax_table_codes_row_portable(s, n, scale, t, delta, r, zp, u);
}

void softmax_table_rows(float* s, size_t rows, size_t n, float scale, const SoftmaxExpTable& t) {
  if (int8_kernels_use_avx512()) softmax_table_rows_avx512(s, rows, n, scale, t);
  else if (int8_kernels_avx2_available()) softmax_table_rows_avx2(s, rows, n, scale, t);
  else softmax_table_rows_portable(s, rows, n, scale, t);
}

const std::vector<SoftmaxTableVariant>& softmax_table_variants() {
  static const std::vector<SoftmaxTableVariant> v = {
      {"avx512", int8_kernels_use_avx512(), softmax_table_rows_avx512, softmax_table_codes_row_avx512},
      {"avx2", int8_kernels_avx2_available(), softmax_table_rows_avx2, softmax_table_codes_row_avx2},
      {"portable", true, softmax_table_rows_portable, softmax_table_codes_row_portable},
  };
  return v;
}

void softmax_table_rows_ref(float* s, size_t rows, size_t n, float scale, const SoftmaxExpTable& t) {
  const double step = double(t.range) / double((1 << t.bits) - 1);
  for (size_t r = 0; r < rows; ++r) {
    float* sr = s + r * n;
    double mx = sr[0];
    for (size_t j = 0; j < n; ++j) mx = std::max<double>(mx, sr[j]);
    double sum = 0;
    std::vector<double> e(n);
    for (size_t j = 0; j < n; ++j) {
      const double i = std::min(std::nearbyint((mx - sr[j]) * scale / step), double((1 << t.bits) - 1));
      e[j] = std::exp(-i * step);
      sum += e[j];
    }
    for (size_t j = 0; j < n; ++j) sr[j] = float(e[j] / sum);
  }
}

}  // namespace vitq
