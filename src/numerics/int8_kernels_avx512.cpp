// 16 values per step: a true division by the step, round half to even (roundscale with an
// explicit nearest-even mode, the default mode nearbyint uses), clip, convert, narrow to bytes.
// The tail is handled with masked loads and stores.
#include "numerics/int8_kernels_avx512.h"

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

}  // namespace vitq


#pragma GCC diagnostic pop
