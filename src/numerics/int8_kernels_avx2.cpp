#include "numerics/int8_kernels_avx2.h"

#include <immintrin.h>

#include <algorithm>

#include "numerics/int8_kernels.h"
#include "numerics/softmax_table.h"
#include "numerics/table_lookup.h"

namespace vitq {

namespace {

struct Code8 {
  __m256 vd, lo, hi;
  __m256i vlo;
};

__attribute__((target("avx2"))) inline Code8 code8_setup(float delta, QRange r) {
  return {_mm256_set1_ps(delta), _mm256_set1_ps(float(r.lo)), _mm256_set1_ps(float(r.hi)), _mm256_set1_epi32(r.lo)};
}

// code_f(x) − r.lo for 8 values (quantizer.h): round(x / Δ) to nearest even, clipped to the range
// (NaN: the range's low end, as the AVX-512 kernels), as int32 table indices.
__attribute__((target("avx2"))) inline __m256i index8(const float* x, const Code8& c) {
  const __m256 q = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x), c.vd), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm256_sub_epi32(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(q, c.lo), c.hi)), c.vlo);
}

// 32 table indices (each 0..255) as 32 bytes in order.
__attribute__((target("avx2"))) inline __m256i index32_u8(const float* x, const Code8& c) {
  const __m256i a = _mm256_packs_epi32(index8(x, c), index8(x + 8, c));
  const __m256i b = _mm256_packs_epi32(index8(x + 16, c), index8(x + 24, c));
  // packus leaves the dwords as 0lo 8lo 16lo 24lo 0hi 8hi 16hi 24hi (4 bytes each): restore order.
  return _mm256_permutevar8x32_epi32(_mm256_packus_epi16(a, b), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// softmax_table.h: e = hi[i >> 5] · lo[i & 31] for 8 scores v, i = min(round((max − v)·k), last).
// The rounding to int32 (half to even) is the integer indefinite 2^31 for NaN, ±∞ and anything
// ≥ 2^31, which the unsigned minimum takes to last (SoftmaxExpTable::index).
struct SoftmaxRegs8 {
  __m256 k, hi[4], lo[4];
  __m256i last, m31;
};

__attribute__((target("avx2"))) inline SoftmaxRegs8 softmax_regs8(float scale, const SoftmaxExpTable& t) {
  SoftmaxRegs8 r;
  r.k = _mm256_set1_ps(scale * t.inv_step);
  for (int q = 0; q < 4; ++q) r.hi[q] = _mm256_loadu_ps(t.hi + 8 * q), r.lo[q] = _mm256_loadu_ps(t.lo + 8 * q);
  r.last = _mm256_set1_epi32((1 << t.bits) - 1);
  r.m31 = _mm256_set1_epi32(31);
  return r;
}

// tab[i] for 8 indices i in [0, 32): each quarter permuted by i's low 3 bits, picked by bits 3, 4.
__attribute__((target("avx2"))) inline __m256 lookup32(const __m256 tab[4], __m256i i) {
  const __m256 b3 = _mm256_castsi256_ps(_mm256_slli_epi32(i, 28)), b4 = _mm256_castsi256_ps(_mm256_slli_epi32(i, 27));
  const __m256 t01 = _mm256_blendv_ps(_mm256_permutevar8x32_ps(tab[0], i), _mm256_permutevar8x32_ps(tab[1], i), b3);
  const __m256 t23 = _mm256_blendv_ps(_mm256_permutevar8x32_ps(tab[2], i), _mm256_permutevar8x32_ps(tab[3], i), b3);
  return _mm256_blendv_ps(t01, t23, b4);
}

__attribute__((target("avx2"))) inline __m256 softmax_exp8(__m256 v, __m256 vmx, const SoftmaxRegs8& t) {
  const __m256i i = _mm256_min_epu32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_sub_ps(vmx, v), t.k)), t.last);
  return _mm256_mul_ps(lookup32(t.hi, _mm256_srli_epi32(i, 5)), lookup32(t.lo, _mm256_and_si256(i, t.m31)));
}

// Row s of n scores → its exponentials in place; returns 1 / Σ_k e_k, summed as the portable loop
// does: value j into lane j mod 16, the lanes reduced by the same fixed tree.
__attribute__((target("avx2"))) float softmax_exp_row8(float* sr, size_t n, float scale, const SoftmaxExpTable& t,
                                                       const SoftmaxRegs8& tr) {
  // The row maximum as the portable loop takes it (m = v > m ? v : m, from sr[0]).
  __m256 vm = _mm256_set1_ps(sr[0]);
  size_t j = 0;
  for (; j + 8 <= n; j += 8) vm = _mm256_max_ps(_mm256_loadu_ps(sr + j), vm);
  alignas(32) float m8[8];
  _mm256_store_ps(m8, vm);
  float mx = m8[0];
  for (int l = 1; l < 8; ++l) mx = m8[l] > mx ? m8[l] : mx;
  for (; j < n; ++j) mx = sr[j] > mx ? sr[j] : mx;
  const __m256 vmx = _mm256_set1_ps(mx);
  __m256 lane0 = _mm256_setzero_ps(), lane1 = _mm256_setzero_ps();
  for (j = 0; j + 16 <= n; j += 16) {
    const __m256 e0 = softmax_exp8(_mm256_loadu_ps(sr + j), vmx, tr);
    const __m256 e1 = softmax_exp8(_mm256_loadu_ps(sr + j + 8), vmx, tr);
    _mm256_storeu_ps(sr + j, e0);
    _mm256_storeu_ps(sr + j + 8, e1);
    lane0 = _mm256_add_ps(lane0, e0);
    lane1 = _mm256_add_ps(lane1, e1);
  }
  alignas(32) float lane[16];
  _mm256_store_ps(lane, lane0);
  _mm256_store_ps(lane + 8, lane1);
  const float k = scale * t.inv_step;
  for (size_t l = 0; j + l < n; ++l) {
    const float e = t.exp_at(t.index((mx - sr[j + l]) * k));
    sr[j + l] = e;
    lane[l] += e;
  }
  for (size_t w = 8; w >= 1; w /= 2)
    for (size_t l = 0; l < w; ++l) lane[l] += lane[l + w];
  return 1.0f / lane[0];
}

}  // namespace

__attribute__((target("avx2"))) void softmax_table_rows_avx2(float* s, size_t rows, size_t n, float scale,
                                                             const SoftmaxExpTable& t) {
  const SoftmaxRegs8 tr = softmax_regs8(scale, t);
  for (size_t r = 0; r < rows; ++r) {
    float* sr = s + r * n;
    const float inv = softmax_exp_row8(sr, n, scale, t, tr);
    const __m256 vinv = _mm256_set1_ps(inv);
    size_t j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(sr + j, _mm256_mul_ps(_mm256_loadu_ps(sr + j), vinv));
    for (; j < n; ++j) sr[j] *= inv;
  }
}

void softmax_table_codes_row_avx2(float* s, size_t n, float scale, const SoftmaxExpTable& t, float delta, QRange r,
                                  int32_t zp, uint8_t* u) {
  softmax_table_rows_avx2(s, 1, n, scale, t);
  quantize_a_u8(s, u, n, delta, r, zp);
}

bool int8_kernels_avx2_available() {
  static const bool ok = __builtin_cpu_supports("avx2");
  return ok;
}

namespace {

// out[i] = T(table[index of x[i]]): the indices eight at a time, the entries by plain loads.
template <class T, class E>
__attribute__((target("avx2"))) void lookup_rows(const float* x, size_t n, float delta, QRange r, const E* table,
                                                 T* out) {
  const Code8 c = code8_setup(delta, r);
  alignas(32) int32_t idx[8];
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(idx), index8(x + i, c));
    for (int l = 0; l < 8; ++l) out[i + size_t(l)] = T(table[idx[l]]);
  }
  for (; i < n; ++i) out[i] = T(table[quantize_one(x[i], delta, r) - r.lo]);
}

}  // namespace

void table_lookup_u8_avx2(const float* x, size_t n, float delta, QRange r, const int32_t* table, uint8_t* out) {
  lookup_rows(x, n, delta, r, table, out);
}

void table_lookup_f32_avx2(const float* x, size_t n, float delta, QRange r, const float* table, float* out) {
  lookup_rows(x, n, delta, r, table, out);
}

__attribute__((target("avx2"))) TokenQuant table_lookup_token_u8_avx2(const float* x, size_t n, float delta, QRange r,
                                                                      const float* table, int valley, int bits,
                                                                      float clip, uint8_t* out) {
  if (!ValleyScan::applies(r, valley, bits))
    return table_lookup_token_u8_portable(x, n, delta, r, table, valley, bits, clip, out);
  // Pass 1: the indices (into out); their least and greatest; the greatest at or below the valley
  // (L) and the least at or above it (R).
  const Code8 c = code8_setup(delta, r);
  const __m256i vval = _mm256_set1_epi8(static_cast<char>(valley)), ones = _mm256_set1_epi8(-1);
  __m256i vmin = ones, vmax = _mm256_setzero_si256(), vl = _mm256_setzero_si256(), vr = ones;
  int any_l = 0, any_r = 0;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256i idx = index32_u8(x + i, c);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), idx);
    vmin = _mm256_min_epu8(vmin, idx);
    vmax = _mm256_max_epu8(vmax, idx);
    const __m256i le = _mm256_cmpeq_epi8(_mm256_min_epu8(idx, vval), idx);  // idx ≤ valley
    const __m256i ge = _mm256_cmpeq_epi8(_mm256_max_epu8(idx, vval), idx);  // idx ≥ valley
    vl = _mm256_max_epu8(vl, _mm256_and_si256(idx, le));        // lanes never set stay 0: ≤ the true L
    vr = _mm256_min_epu8(vr, _mm256_or_si256(idx, _mm256_andnot_si256(ge, ones)));  // stay 255: ≥ the true R
    any_l |= _mm256_movemask_epi8(le);
    any_r |= _mm256_movemask_epi8(ge);
  }
  alignas(32) uint8_t b_min[32], b_max[32], b_l[32], b_r[32];
  _mm256_store_si256(reinterpret_cast<__m256i*>(b_min), vmin);
  _mm256_store_si256(reinterpret_cast<__m256i*>(b_max), vmax);
  _mm256_store_si256(reinterpret_cast<__m256i*>(b_l), vl);
  _mm256_store_si256(reinterpret_cast<__m256i*>(b_r), vr);
  ValleyScan scan;
  scan.any_l = any_l != 0;
  scan.any_r = any_r != 0;
  scan.fold_lanes(b_min, b_max, b_l, b_r, 32);
  scan.scan_tail(x, i, n, delta, r, valley, out);
  const TokenQuant t = scan.token_quant(table, n, bits, clip);
  // Each entry's code for this row, then pass 2: the indices looked up in place.
  alignas(32) uint8_t t8[256];
  quantize_a_u8(table, t8, size_t(r.hi - r.lo + 1), t.delta, t.range(bits), -t.lo);
  for (i = 0; i < n; ++i) out[i] = t8[out[i]];
  return t;
}

}  // namespace vitq
