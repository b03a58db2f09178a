// 16 values per step: a true division by the step, round half to even (roundscale with an
// explicit nearest-even mode, the default mode nearbyint uses), clip, convert, narrow to bytes.
// The tail is handled with masked loads and stores.
#include "numerics/int8_kernels_avx512.h"

#include "numerics/softmax_table.h"

// GCC 12's unmasked AVX-512 intrinsics pass _mm512_undefined_*() as the merge source, which
// -Wmaybe-uninitialized reports inside the header (a known false positive).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#define VITQ_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

namespace vitq {
namespace {

// code_f (numerics/quantizer.h) for 16 values: round(x / Δ) half to even, clipped to [lo, hi].
VITQ_AVX512 inline __m512 code16(__m512 x, __m512 vd, __m512 lo, __m512 hi) {
  const __m512 q = _mm512_roundscale_ps(_mm512_div_ps(x, vd), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm512_min_ps(_mm512_max_ps(q, lo), hi);
}

}  // namespace

VITQ_AVX512
void quantize_a_u8_avx512(const float* x, uint8_t* u, size_t n, float delta, QRange r, int32_t zp) {
  const __m512 vd = _mm512_set1_ps(delta), lo = _mm512_set1_ps(float(r.lo)), hi = _mm512_set1_ps(float(r.hi));
  const __m512i vzp = _mm512_set1_epi32(zp);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 q = code16(_mm512_loadu_ps(x + i), vd, lo, hi);
    const __m512i c = _mm512_add_epi32(_mm512_cvtps_epi32(q), vzp);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(u + i), _mm512_cvtepi32_epi8(c));
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 q = code16(_mm512_maskz_loadu_ps(m, x + i), vd, lo, hi);
    _mm512_mask_cvtepi32_storeu_epi8(u + i, m, _mm512_add_epi32(_mm512_cvtps_epi32(q), vzp));
  }
}

VITQ_AVX512
int32_t quantize_b_s8_avx512(const float* x, int8_t* q8, size_t n, float delta, QRange r) {
  const __m512 vd = _mm512_set1_ps(delta), lo = _mm512_set1_ps(float(r.lo)), hi = _mm512_set1_ps(float(r.hi));
  __m512i sum = _mm512_setzero_si512();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 q = code16(_mm512_loadu_ps(x + i), vd, lo, hi);
    const __m512i c = _mm512_cvtps_epi32(q);
    sum = _mm512_add_epi32(sum, c);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q8 + i), _mm512_cvtepi32_epi8(c));
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 q = code16(_mm512_maskz_loadu_ps(m, x + i), vd, lo, hi);
    const __m512i c = _mm512_maskz_mov_epi32(m, _mm512_cvtps_epi32(q));
    sum = _mm512_add_epi32(sum, c);
    _mm512_mask_cvtepi32_storeu_epi8(q8 + i, m, c);
  }
  return _mm512_reduce_add_epi32(sum);
}

// Table lookups: the code as an index (code − lo), then a gather of 16 entries.
VITQ_AVX512
void table_lookup_u8_avx512(const float* x, size_t n, float delta, QRange r, const int32_t* table, uint8_t* out) {
  const __m512 vd = _mm512_set1_ps(delta), lo = _mm512_set1_ps(float(r.lo)), hi = _mm512_set1_ps(float(r.hi));
  const __m512i vlo = _mm512_set1_epi32(r.lo);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i idx = _mm512_sub_epi32(_mm512_cvtps_epi32(code16(_mm512_loadu_ps(x + i), vd, lo, hi)), vlo);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm512_cvtepi32_epi8(_mm512_i32gather_epi32(idx, table, 4)));
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512i idx = _mm512_sub_epi32(_mm512_cvtps_epi32(code16(_mm512_maskz_loadu_ps(m, x + i), vd, lo, hi)), vlo);
    const __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, idx, table, 4);
    _mm512_mask_cvtepi32_storeu_epi8(out + i, m, v);
  }
}

VITQ_AVX512
void table_lookup_f32_avx512(const float* x, size_t n, float delta, QRange r, const float* table, float* out) {
  const __m512 vd = _mm512_set1_ps(delta), lo = _mm512_set1_ps(float(r.lo)), hi = _mm512_set1_ps(float(r.hi));
  const __m512i vlo = _mm512_set1_epi32(r.lo);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i idx = _mm512_sub_epi32(_mm512_cvtps_epi32(code16(_mm512_loadu_ps(x + i), vd, lo, hi)), vlo);
    _mm512_storeu_ps(out + i, _mm512_i32gather_ps(idx, table, 4));
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512i idx = _mm512_sub_epi32(_mm512_cvtps_epi32(code16(_mm512_maskz_loadu_ps(m, x + i), vd, lo, hi)), vlo);
    _mm512_mask_storeu_ps(out + i, m, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, table, 4));
  }
}

namespace {

// e = hi[i >> 5] · lo[i & 31] for 16 scores v, i = min(round((max − v)·k), last) (NaN: last).
VITQ_AVX512 inline __m512 softmax_exp16(__m512 v, __m512 vmx, __m512 k, __m512 last, __m512 hi0, __m512 hi1,
                                        __m512 lo0, __m512 lo1, __m512i m31) {
  const __m512 q = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_sub_ps(vmx, v), k),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 qc = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(q, last, _CMP_LT_OQ), last, q);
  const __m512i i = _mm512_cvttps_epi32(qc);
  const __m512 h = _mm512_permutex2var_ps(hi0, _mm512_srli_epi32(i, 5), hi1);
  const __m512 l = _mm512_permutex2var_ps(lo0, _mm512_and_si512(i, m31), lo1);
  return _mm512_mul_ps(h, l);
}

}  // namespace

// softmax_table_rows (numerics/softmax_table.h) with the tables in registers: the index split into
// its high and low 5 bits, each looked up by a two-register permute; the 16 lanes of the sum are
// the portable loop's lanes (value j in lane j mod 16), reduced in the same order.
VITQ_AVX512
void softmax_table_rows_avx512(float* s, size_t rows, size_t n, float scale, const SoftmaxExpTable& t) {
  const float kf = scale * t.inv_step, lastf = float((1 << t.bits) - 1);
  const __m512 k = _mm512_set1_ps(kf), last = _mm512_set1_ps(lastf);
  const __m512 hi0 = _mm512_loadu_ps(t.hi), hi1 = _mm512_loadu_ps(t.hi + 16);
  const __m512 lo0 = _mm512_loadu_ps(t.lo), lo1 = _mm512_loadu_ps(t.lo + 16);
  const __m512i m31 = _mm512_set1_epi32(31);
  for (size_t r = 0; r < rows; ++r) {
    float* sr = s + r * n;
    __m512 vm = _mm512_set1_ps(sr[0]);  // the row maximum (exact in any order)
    size_t j = 0;
    for (; j + 16 <= n; j += 16) vm = _mm512_max_ps(vm, _mm512_loadu_ps(sr + j));
    if (j < n) vm = _mm512_mask_max_ps(vm, static_cast<__mmask16>((1u << (n - j)) - 1), vm, _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << (n - j)) - 1), sr + j));
    const __m512 vmx = _mm512_set1_ps(_mm512_reduce_max_ps(vm));
    __m512 lane = _mm512_setzero_ps();
    for (j = 0; j + 16 <= n; j += 16) {
      const __m512 e = softmax_exp16(_mm512_loadu_ps(sr + j), vmx, k, last, hi0, hi1, lo0, lo1, m31);
      _mm512_storeu_ps(sr + j, e);
      lane = _mm512_add_ps(lane, e);
    }
    if (j < n) {
      const __mmask16 m = static_cast<__mmask16>((1u << (n - j)) - 1);
      const __m512 e = softmax_exp16(_mm512_mask_loadu_ps(vmx, m, sr + j), vmx, k, last, hi0, hi1, lo0, lo1, m31);
      _mm512_mask_storeu_ps(sr + j, m, e);
      lane = _mm512_mask_add_ps(lane, m, lane, e);
    }
    alignas(64) float ls[16];
    _mm512_store_ps(ls, lane);
    for (size_t w = 8; w >= 1; w /= 2)
      for (size_t l = 0; l < w; ++l) ls[l] += ls[l + w];
    const __m512 inv = _mm512_set1_ps(1.0f / ls[0]);
    for (j = 0; j + 16 <= n; j += 16) _mm512_storeu_ps(sr + j, _mm512_mul_ps(_mm512_loadu_ps(sr + j), inv));
    if (j < n) {
      const __mmask16 m = static_cast<__mmask16>((1u << (n - j)) - 1);
      _mm512_mask_storeu_ps(sr + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, sr + j), inv));
    }
  }
}

}  // namespace vitq


#pragma GCC diagnostic pop
