#include "numerics/table_lookup.h"

#include <algorithm>

#include "numerics/int8_kernels.h"
#include "numerics/int8_kernels_avx2.h"
#include "numerics/int8_kernels_avx512.h"
#include "numerics/multiversion.h"

namespace vitq {
namespace {

VITQ_MULTIVERSION
void table_lookup_u8_portable(const float* x, size_t n, float delta, QRange r, const int32_t* table, uint8_t* out) {
  const float lo = float(r.lo), hi = float(r.hi);
#pragma omp simd
  for (size_t i = 0; i < n; ++i) out[i] = uint8_t(table[int32_t(code_f(x[i], delta, lo, hi)) - r.lo]);
}

VITQ_MULTIVERSION
void table_lookup_f32_portable(const float* x, size_t n, float delta, QRange r, const float* table, float* out) {
  const float lo = float(r.lo), hi = float(r.hi);
#pragma omp simd
  for (size_t i = 0; i < n; ++i) out[i] = table[int32_t(code_f(x[i], delta, lo, hi)) - r.lo];
}

}  // namespace

VITQ_MULTIVERSION
TokenQuant table_lookup_token_u8_portable(const float* x, size_t n, float delta, QRange r, const float* table, int,
                                          int bits, float clip, uint8_t* out) {
  const float lo = float(r.lo), hi = float(r.hi);
  float mn = 0.0f, mx = 0.0f;  // token_quant's range of the looked-up values
  for (size_t i = 0; i < n; ++i) {
    const float v = table[int32_t(code_f(x[i], delta, lo, hi)) - r.lo];
    mn = v < mn ? v : mn;
    mx = v > mx ? v : mx;
  }
  const TokenQuant t = token_quant_of_range(mn, mx, bits, clip);
  const QRange tr = t.range(bits);
  const float tlo = float(tr.lo), thi = float(tr.hi);
  for (size_t i = 0; i < n; ++i) {
    const float v = table[int32_t(code_f(x[i], delta, lo, hi)) - r.lo];
    out[i] = uint8_t(int32_t(code_f(v, t.delta, tlo, thi)) - t.lo);
  }
  return t;
}

void ValleyScan::fold_lanes(const uint8_t* mn, const uint8_t* mx, const uint8_t* l, const uint8_t* r, int lanes) {
  for (int k = 0; k < lanes; ++k) {
    imin = std::min<int>(imin, mn[k]);
    imax = std::max<int>(imax, mx[k]);
    il = std::max<int>(il, l[k]);
    ir = std::min<int>(ir, r[k]);
  }
}

void ValleyScan::scan_tail(const float* x, size_t i, size_t n, float delta, QRange r, int valley, uint8_t* out) {
  for (; i < n; ++i) {
    const int k = quantize_one(x[i], delta, r) - r.lo;
    out[i] = uint8_t(k);
    imin = std::min(imin, k), imax = std::max(imax, k);
    if (k <= valley) il = std::max(il, k), any_l = true;
    if (k >= valley) ir = std::min(ir, k), any_r = true;
  }
}

TokenQuant ValleyScan::token_quant(const float* table, size_t n, int bits, float clip) const {
  float mn = 0.0f, mx = 0.0f;
  if (n > 0) {
    const float top = std::max(table[imin], table[imax]);
    const float bottom = any_l && any_r ? std::min(table[il], table[ir]) : any_l ? table[il] : table[ir];
    mn = bottom < 0.0f ? bottom : 0.0f;
    mx = top > 0.0f ? top : 0.0f;
  }
  return token_quant_of_range(mn, mx, bits, clip);
}

int table_valley(const float* t, size_t n) {
  if (n == 0) return -1;
  size_t a = 0;
  for (size_t k = 1; k < n; ++k)
    if (t[k] < t[a]) a = k;
  for (size_t k = 1; k <= a; ++k)
    if (!(t[k] <= t[k - 1])) return -1;
  for (size_t k = a + 1; k < n; ++k)
    if (!(t[k] >= t[k - 1])) return -1;
  return int(a);
}

namespace {

const bool kVbmi = int8_kernels_use_avx512() && __builtin_cpu_supports("avx512vbmi");
const bool kAvx2 = int8_kernels_avx2_available();

}  // namespace

const std::vector<TableLookupVariant>& table_lookup_variants() {
  static const std::vector<TableLookupVariant> v = {
      {"avx512-vbmi", kVbmi, table_lookup_u8_avx512_vbmi, table_lookup_f32_avx512, table_lookup_token_u8_avx512_vbmi},
      {"avx512", int8_kernels_use_avx512(), table_lookup_u8_avx512, table_lookup_f32_avx512,
       kAvx2 ? table_lookup_token_u8_avx2 : table_lookup_token_u8_portable},
      {"avx2", kAvx2, table_lookup_u8_avx2, table_lookup_f32_avx2, table_lookup_token_u8_avx2},
      {"portable", true, table_lookup_u8_portable, table_lookup_f32_portable, table_lookup_token_u8_portable},
  };
  return v;
}

void table_lookup_u8(const float* x, size_t n, float delta, QRange r, const int32_t* table, uint8_t* out) {
  if (kVbmi) table_lookup_u8_avx512_vbmi(x, n, delta, r, table, out);
  else if (int8_kernels_use_avx512()) table_lookup_u8_avx512(x, n, delta, r, table, out);
  else if (kAvx2) table_lookup_u8_avx2(x, n, delta, r, table, out);
  else table_lookup_u8_portable(x, n, delta, r, table, out);
}

TokenQuant table_lookup_token_u8(const float* x, size_t n, float delta, QRange r, const float* table, int valley,
                                 int bits, float clip, uint8_t* out) {
  if (kVbmi) return table_lookup_token_u8_avx512_vbmi(x, n, delta, r, table, valley, bits, clip, out);
  if (kAvx2) return table_lookup_token_u8_avx2(x, n, delta, r, table, valley, bits, clip, out);
  return table_lookup_token_u8_portable(x, n, delta, r, table, valley, bits, clip, out);
}

void table_lookup_f32(const float* x, size_t n, float delta, QRange r, const float* table, float* out) {
  if (int8_kernels_use_avx512()) table_lookup_f32_avx512(x, n, delta, r, table, out);
  else if (kAvx2) table_lookup_f32_avx2(x, n, delta, r, table, out);
  else table_lookup_f32_portable(x, n, delta, r, table, out);
}

void table_lookup_u8_ref(const float* x, size_t n, float delta, QRange r, const int32_t* table, uint8_t* out) {
  for (size_t i = 0; i < n; ++i) out[i] = uint8_t(table[quantize_one(x[i], delta, r) - r.lo]);
}

void table_lookup_f32_ref(const float* x, size_t n, float delta, QRange r, const float* table, float* out) {
  for (size_t i = 0; i < n; ++i) out[i] = table[quantize_one(x[i], delta, r) - r.lo];
}

}  // namespace vitq
