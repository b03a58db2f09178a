// 16 values per step. The code is round(x / Δ) half to even, clipped — the true quotient's
// rounding (numerics/quantizer.h) — but computed without a division where that is provably the
// same: t = x · fl(1/Δ) is within 2^−21·|x/Δ| of fl(x / Δ) (two roundings of 2^−24 each, and one
// of the quotient), so once t is clipped to [lo, hi] (|t| ≤ 1024), no rounding boundary k + ½ lies
// between t and fl(x / Δ) unless one lies within kTieGuard (2^−11 > 2^−21·1024) of t. The 16 values
// are rounded at t ± kTieGuard; where any lane's two roundings differ (a value near a boundary,
// about 1 in 500), the 16 are divided instead. A division (3 µops, ~10 cycles a vector) was the
// quantizer's bottleneck; the product path is ~30 % faster with the same bits. Clipping before
// rounding gives the same code as after, the bounds being integers; NaN clips to lo either way.
// The tail is handled with masked loads and stores.
#include "numerics/int8_kernels_avx512.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "numerics/softmax_table.h"
#include "numerics/table_lookup.h"

// GCC 12's unmasked AVX-512 intrinsics pass _mm512_undefined_*() as the merge source, which
// -Wmaybe-uninitialized reports inside the header (a known false positive).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#define VITQ_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))
#define VITQ_AVX512_VBMI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi")))

namespace vitq {
namespace {

constexpr float kTieGuard = 0x1p-11f;
constexpr int32_t kMaxProductRange = 1024;  // |lo|, |hi| up to which kTieGuard bounds the product's error

// A quantizer's constants for code16.
struct Code16 {
  __m512 vd, vr, lo, hi, guard;
  bool product;  // 1/Δ and Δ normal floats and the range within kMaxProductRange: the product path
};

VITQ_AVX512 inline Code16 code16_setup(float delta, QRange r) {
  const float inv = 1.0f / delta;
  const bool product = std::isnormal(delta) && std::isnormal(inv) && std::abs(r.lo) <= kMaxProductRange &&
                       std::abs(r.hi) <= kMaxProductRange;
  return {_mm512_set1_ps(delta), _mm512_set1_ps(inv), _mm512_set1_ps(float(r.lo)), _mm512_set1_ps(float(r.hi)),
          _mm512_set1_ps(kTieGuard), product};
}

// code_f (numerics/quantizer.h) for 16 values, as int32: the quotient's rounding.
VITQ_AVX512 inline __m512i code16_divide(__m512 x, const Code16& c) {
  const __m512 q = _mm512_roundscale_ps(_mm512_div_ps(x, c.vd), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(q, c.lo), c.hi));
}

VITQ_AVX512 inline __m512i code16(__m512 x, const Code16& c) {
  if (!c.product) return code16_divide(x, c);
  const __m512 t = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(x, c.vr), c.lo), c.hi);
  const __m512i up = _mm512_cvt_roundps_epi32(_mm512_add_ps(t, c.guard), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512i down = _mm512_cvt_roundps_epi32(_mm512_sub_ps(t, c.guard), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  if (__builtin_expect(_mm512_cmpneq_epi32_mask(up, down) != 0, 0)) return code16_divide(x, c);
  return up;
}

}  // namespace

VITQ_AVX512
void quantize_a_u8_avx512(const float* x, uint8_t* u, size_t n, float delta, QRange r, int32_t zp) {
  const Code16 c = code16_setup(delta, r);
  const __m512i vzp = _mm512_set1_epi32(zp);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i q = _mm512_add_epi32(code16(_mm512_loadu_ps(x + i), c), vzp);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(u + i), _mm512_cvtepi32_epi8(q));
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_cvtepi32_storeu_epi8(u + i, m, _mm512_add_epi32(code16(_mm512_maskz_loadu_ps(m, x + i), c), vzp));
  }
}

VITQ_AVX512
int32_t quantize_b_s8_avx512(const float* x, int8_t* q8, size_t n, float delta, QRange r) {
  const Code16 c = code16_setup(delta, r);
  __m512i sum = _mm512_setzero_si512();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i q = code16(_mm512_loadu_ps(x + i), c);
    sum = _mm512_add_epi32(sum, q);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q8 + i), _mm512_cvtepi32_epi8(q));
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512i q = _mm512_maskz_mov_epi32(m, code16(_mm512_maskz_loadu_ps(m, x + i), c));
    sum = _mm512_add_epi32(sum, q);
    _mm512_mask_cvtepi32_storeu_epi8(q8 + i, m, q);
  }
  return _mm512_reduce_add_epi32(sum);
}

// Table lookups: the code as an index (code − lo), then a gather of 16 entries.
VITQ_AVX512
void table_lookup_u8_avx512(const float* x, size_t n, float delta, QRange r, const int32_t* table, uint8_t* out) {
  const Code16 c = code16_setup(delta, r);
  const __m512i vlo = _mm512_set1_epi32(r.lo);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i idx = _mm512_sub_epi32(code16(_mm512_loadu_ps(x + i), c), vlo);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm512_cvtepi32_epi8(_mm512_i32gather_epi32(idx, table, 4)));
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512i idx = _mm512_sub_epi32(code16(_mm512_maskz_loadu_ps(m, x + i), c), vlo);
    const __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, idx, table, 4);
    _mm512_mask_cvtepi32_storeu_epi8(out + i, m, v);
  }
}

namespace {

// The byte indices (code − lo) of 64 values.
VITQ_AVX512_VBMI inline __m512i index64(const float* x, const Code16& c, __m512i vlo) {
  __m512i idx = _mm512_setzero_si512();
  idx = _mm512_inserti32x4(idx, _mm512_cvtepi32_epi8(_mm512_sub_epi32(code16(_mm512_loadu_ps(x), c), vlo)), 0);
  idx = _mm512_inserti32x4(idx, _mm512_cvtepi32_epi8(_mm512_sub_epi32(code16(_mm512_loadu_ps(x + 16), c), vlo)), 1);
  idx = _mm512_inserti32x4(idx, _mm512_cvtepi32_epi8(_mm512_sub_epi32(code16(_mm512_loadu_ps(x + 32), c), vlo)), 2);
  idx = _mm512_inserti32x4(idx, _mm512_cvtepi32_epi8(_mm512_sub_epi32(code16(_mm512_loadu_ps(x + 48), c), vlo)), 3);
  return idx;
}

// A 256-byte table in four registers, looked up for 64 byte indices by two two-register byte
// permutes (index bits 0–6) and a blend on bit 7.
struct ByteTable256 {
  __m512i t0, t1, t2, t3;
};

VITQ_AVX512_VBMI inline ByteTable256 load_table256(const uint8_t* t) {
  return {_mm512_loadu_si512(t), _mm512_loadu_si512(t + 64), _mm512_loadu_si512(t + 128), _mm512_loadu_si512(t + 192)};
}

VITQ_AVX512_VBMI inline __m512i lookup64(const ByteTable256& t, __m512i idx) {
  return _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx), _mm512_permutex2var_epi8(t.t0, idx, t.t1),
                                _mm512_permutex2var_epi8(t.t2, idx, t.t3));
}

}  // namespace

// With AVX-512 VBMI and at most 256 entries: the entries as bytes in four registers, 64 values per
// step looked up by two two-register byte permutes (index bits 0–6) and a blend on bit 7 — no gather.
VITQ_AVX512_VBMI
void table_lookup_u8_avx512_vbmi(const float* x, size_t n, float delta, QRange r, const int32_t* table,
                                 uint8_t* out) {
  const size_t entries = size_t(r.hi - r.lo + 1);
  if (entries > 256) {
    table_lookup_u8_avx512(x, n, delta, r, table, out);
    return;
  }
  alignas(64) uint8_t t8[256] = {};
  for (size_t j = 0; j < entries; ++j) t8[j] = uint8_t(table[j]);
  const ByteTable256 t = load_table256(t8);
  const Code16 c = code16_setup(delta, r);
  const __m512i vlo = _mm512_set1_epi32(r.lo);
  size_t i = 0;
  for (; i + 64 <= n; i += 64) _mm512_storeu_si512(out + i, lookup64(t, index64(x + i, c, vlo)));
  if (i < n) table_lookup_u8_avx512(x + i, n - i, delta, r, table, out + i);
}

// The byte-wise minimum / maximum of a vector's four 128-bit quarters.
VITQ_AVX512 inline __m128i fold_min_epu8(__m512i v) {
  const __m256i h = _mm256_min_epu8(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
  return _mm_min_epu8(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}
VITQ_AVX512 inline __m128i fold_max_epu8(__m512i v) {
  const __m256i h = _mm256_max_epu8(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
  return _mm_max_epu8(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

VITQ_AVX512_VBMI
TokenQuant table_lookup_token_u8_avx512_vbmi(const float* x, size_t n, float delta, QRange r, const float* table,
                                             int valley, int bits, float clip, uint8_t* out) {
  if (!ValleyScan::applies(r, valley, bits))
    return table_lookup_token_u8_portable(x, n, delta, r, table, valley, bits, clip, out);
  const size_t entries = size_t(r.hi - r.lo + 1);
  // Pass 1: the indices (into out), their least and greatest, and the greatest at or below the
  // valley (L) and the least at or above it (R).
  const Code16 c = code16_setup(delta, r);
  const __m512i vlo = _mm512_set1_epi32(r.lo), vval = _mm512_set1_epi8(static_cast<char>(valley));
  __m512i vmin = _mm512_set1_epi8(-1), vmax = _mm512_setzero_si512(), vl = _mm512_setzero_si512(),
          vr = _mm512_set1_epi8(-1);
  ValleyScan scan;
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const __m512i idx = index64(x + i, c, vlo);
    _mm512_storeu_si512(out + i, idx);
    vmin = _mm512_min_epu8(vmin, idx);
    vmax = _mm512_max_epu8(vmax, idx);
    const __mmask64 le = _mm512_cmple_epu8_mask(idx, vval), ge = _mm512_cmpge_epu8_mask(idx, vval);
    vl = _mm512_mask_max_epu8(vl, le, vl, idx);  // lanes never set stay 0: no greater than the true L
    vr = _mm512_mask_min_epu8(vr, ge, vr, idx);  // lanes never set stay 255: no less than the true R
    scan.any_l |= le != 0;
    scan.any_r |= ge != 0;
  }
  // The 64 lanes folded to 16 in registers (minima and maxima: exact in any order), then by ValleyScan.
  alignas(16) uint8_t b_min[16], b_max[16], b_l[16], b_r[16];
  _mm_store_si128(reinterpret_cast<__m128i*>(b_min), fold_min_epu8(vmin));
  _mm_store_si128(reinterpret_cast<__m128i*>(b_max), fold_max_epu8(vmax));
  _mm_store_si128(reinterpret_cast<__m128i*>(b_l), fold_max_epu8(vl));
  _mm_store_si128(reinterpret_cast<__m128i*>(b_r), fold_min_epu8(vr));
  scan.fold_lanes(b_min, b_max, b_l, b_r, 16);
  scan.scan_tail(x, i, n, delta, r, valley, out);
  const TokenQuant t = scan.token_quant(table, n, bits, clip);
  // The row's code of every entry, then pass 2: the indices looked up in place.
  alignas(64) float tv[256] = {};
  for (size_t k = 0; k < entries; ++k) tv[k] = table[k];
  alignas(64) uint8_t t8[256];
  quantize_a_u8_avx512(tv, t8, 256, t.delta, t.range(bits), -t.lo);
  const ByteTable256 tt = load_table256(t8);
  for (i = 0; i + 64 <= n; i += 64) _mm512_storeu_si512(out + i, lookup64(tt, _mm512_loadu_si512(out + i)));
  for (; i < n; ++i) out[i] = t8[out[i]];
  return t;
}

VITQ_AVX512
void table_lookup_f32_avx512(const float* x, size_t n, float delta, QRange r, const float* table, float* out) {
  const Code16 c = code16_setup(delta, r);
  const __m512i vlo = _mm512_set1_epi32(r.lo);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i idx = _mm512_sub_epi32(code16(_mm512_loadu_ps(x + i), c), vlo);
    _mm512_storeu_ps(out + i, _mm512_i32gather_ps(idx, table, 4));
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512i idx = _mm512_sub_epi32(code16(_mm512_maskz_loadu_ps(m, x + i), c), vlo);
    _mm512_mask_storeu_ps(out + i, m, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, table, 4));
  }
}

namespace {

// A softmax table in registers: the exponent argument's scale k = scale · inv_step, the last
// index, the two 32-entry tables (two registers each) and the low-5-bit mask.
struct SoftmaxRegs {
  __m512 k, hi0, hi1, lo0, lo1;
  __m512i last, m31;
};

VITQ_AVX512 inline SoftmaxRegs softmax_regs(float scale, const SoftmaxExpTable& t) {
  return {_mm512_set1_ps(scale * t.inv_step), _mm512_loadu_ps(t.hi), _mm512_loadu_ps(t.hi + 16),
          _mm512_loadu_ps(t.lo), _mm512_loadu_ps(t.lo + 16), _mm512_set1_epi32((1 << t.bits) - 1),
          _mm512_set1_epi32(31)};
}

// e = hi[i >> 5] · lo[i & 31] for 16 scores v, i = min(round((max − v)·k), last) (NaN: last).
// The argument is ≥ 0 (max is the row's maximum); its rounding to int32 (half to even) is the
// integer indefinite 2^31 for NaN, ±∞ and anything ≥ 2^31, which the unsigned minimum takes to last.
VITQ_AVX512 inline __m512 softmax_exp16(__m512 v, __m512 vmx, const SoftmaxRegs& t) {
  const __m512i i = _mm512_min_epu32(
      _mm512_cvt_roundps_epi32(_mm512_mul_ps(_mm512_sub_ps(vmx, v), t.k), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
      t.last);
  const __m512 h = _mm512_permutex2var_ps(t.hi0, _mm512_srli_epi32(i, 5), t.hi1);
  const __m512 l = _mm512_permutex2var_ps(t.lo0, _mm512_and_si512(i, t.m31), t.lo1);
  return _mm512_mul_ps(h, l);
}

// Row s of n scores → its exponentials e_j in place; returns 1 / Σ_k e_k (the portable loop's lanes:
// value j in lane j mod 16, reduced in the same order).
VITQ_AVX512 inline float softmax_exp_row(float* sr, size_t n, const SoftmaxRegs& t) {
  __m512 vm = _mm512_set1_ps(sr[0]);  // the row maximum (exact in any order)
  size_t j = 0;
  for (; j + 16 <= n; j += 16) vm = _mm512_max_ps(vm, _mm512_loadu_ps(sr + j));
  if (j < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - j)) - 1);
    vm = _mm512_mask_max_ps(vm, m, vm, _mm512_maskz_loadu_ps(m, sr + j));
  }
  const __m512 vmx = _mm512_set1_ps(_mm512_reduce_max_ps(vm));
  __m512 lane = _mm512_setzero_ps();
  for (j = 0; j + 16 <= n; j += 16) {
    const __m512 e = softmax_exp16(_mm512_loadu_ps(sr + j), vmx, t);
    _mm512_storeu_ps(sr + j, e);
    lane = _mm512_add_ps(lane, e);
  }
  if (j < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - j)) - 1);
    const __m512 e = softmax_exp16(_mm512_mask_loadu_ps(vmx, m, sr + j), vmx, t);
    _mm512_mask_storeu_ps(sr + j, m, e);
    lane = _mm512_mask_add_ps(lane, m, lane, e);
  }
  alignas(64) float ls[16];
  _mm512_store_ps(ls, lane);
  for (size_t w = 8; w >= 1; w /= 2)
    for (size_t l = 0; l < w; ++l) ls[l] += ls[l + w];
  return 1.0f / ls[0];
}

}  // namespace

// softmax_table_rows (numerics/softmax_table.h) with the tables in registers: the index split into
// its high and low 5 bits, each looked up by a two-register permute.
VITQ_AVX512
void softmax_table_rows_avx512(float* s, size_t rows, size_t n, float scale, const SoftmaxExpTable& t) {
  const SoftmaxRegs tr = softmax_regs(scale, t);
  for (size_t r = 0; r < rows; ++r) {
    float* sr = s + r * n;
    const __m512 inv = _mm512_set1_ps(softmax_exp_row(sr, n, tr));
    size_t j = 0;
    for (; j + 16 <= n; j += 16) _mm512_storeu_ps(sr + j, _mm512_mul_ps(_mm512_loadu_ps(sr + j), inv));
    if (j < n) {
      const __mmask16 m = static_cast<__mmask16>((1u << (n - j)) - 1);
      _mm512_mask_storeu_ps(sr + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, sr + j), inv));
    }
  }
}

// sum_u8: |u − 0| summed over each 8 bytes (vpsadbw) into 64-bit lanes, exact for any n.
VITQ_AVX512
int64_t sum_u8_avx512(const uint8_t* u, size_t n) {
  const __m512i zero = _mm512_setzero_si512();
  __m512i acc = _mm512_setzero_si512();
  size_t j = 0;
  for (; j + 64 <= n; j += 64) acc = _mm512_add_epi64(acc, _mm512_sad_epu8(_mm512_loadu_si512(u + j), zero));
  if (j < n) {
    const __mmask64 m = (__mmask64(1) << (n - j)) - 1;  // n − j < 64
    acc = _mm512_add_epi64(acc, _mm512_sad_epu8(_mm512_maskz_loadu_epi8(m, u + j), zero));
  }
  return _mm512_reduce_add_epi64(acc);
}

// softmax_table_codes_row: the same exponentials, then p = e · (1/Σ) quantized as quantize_a_u8.
VITQ_AVX512
void softmax_table_codes_row_avx512(float* s, size_t n, float scale, const SoftmaxExpTable& t, float delta, QRange r,
                                    int32_t zp, uint8_t* u) {
  const __m512 inv = _mm512_set1_ps(softmax_exp_row(s, n, softmax_regs(scale, t)));
  const Code16 c = code16_setup(delta, r);
  const __m512i vzp = _mm512_set1_epi32(zp);
  size_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m512i q = _mm512_add_epi32(code16(_mm512_mul_ps(_mm512_loadu_ps(s + j), inv), c), vzp);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(u + j), _mm512_cvtepi32_epi8(q));
  }
  if (j < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - j)) - 1);
    const __m512i q = _mm512_add_epi32(code16(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, s + j), inv), c), vzp);
    _mm512_mask_cvtepi32_storeu_epi8(u + j, m, q);
  }
}

}  // namespace vitq


#pragma GCC diagnostic pop
