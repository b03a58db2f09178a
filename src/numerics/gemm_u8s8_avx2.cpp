#include "numerics/gemm_u8s8_avx2.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "numerics/int8_kernels_avx2.h"

namespace vitq {

namespace {

constexpr int kNr = 16, kMr = 4, kQuadBytes = 4 * kNr;
static_assert(kQuadBytes == 64, "a k-quad of a column block is two ymm registers of B");

// Four bytes of a row from p: all four, or (the K tail) the first `valid`, zero beyond: never
// read past the row.
inline int32_t load_quad(const uint8_t* p) {
  int32_t w;
  std::memcpy(&w, p, 4);
  return w;
}
inline int32_t load_quad_tail(const uint8_t* p, int valid) {
  int32_t w = 0;
  std::memcpy(&w, p, size_t(valid));
  return w;
}

// acc += (u·b − 128·b) for the 4 k of quad w (u8 codes) against the two B vectors of the quad.
__attribute__((target("avx2"))) inline void quad_step(__m256i acc[2], int32_t w, __m256i b0, __m256i b1) {
  const __m256i flip = _mm256_set1_epi8(char(0x80)), ones = _mm256_set1_epi16(1);
  // a' = u − 128 (flipping the top bit), |a'| as u8 (|−128| = 128), b·sign(a') as s8.
  const __m256i av = _mm256_xor_si256(_mm256_set1_epi32(w), flip);
  const __m256i ax = _mm256_abs_epi8(av);
  acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(b0, av)), ones));
  acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(b1, av)), ones));
}

// Rows [0, MR) of a: c[r][0..ncols) = Σ_k a[r][k]·B[k][n] for one column block (bp: its quads).
template <int MR>
__attribute__((target("avx2"))) void tile(const uint8_t* a, size_t lda, int K, const int8_t* bp, const int32_t* cs,
                                          const Minus128Row* fix, const Minus128Row* fix_end, int32_t* c, size_t ldc,
                                          int ncols) {
  __m256i acc[MR][2];
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  const int full = K / 4;
  for (int kq = 0; kq < full; ++kq) {
    const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bp + size_t(kq) * kQuadBytes));
    const __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bp + size_t(kq) * kQuadBytes + 32));
    for (int r = 0; r < MR; ++r) quad_step(acc[r], load_quad(a + size_t(r) * lda + size_t(kq) * 4), b0, b1);
  }
  if (K % 4) {  // B's padding k are 0, so the zeroed bytes add nothing
    const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bp + size_t(full) * kQuadBytes));
    const __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bp + size_t(full) * kQuadBytes + 32));
    for (int r = 0; r < MR; ++r)
      quad_step(acc[r], load_quad_tail(a + size_t(r) * lda + size_t(full) * 4, K % 4), b0, b1);
  }
  // The codes −128 packed as −127: u·(−128) = u·(−127) − u, for the columns of each entry's mask.
  if (fix != fix_end) {
    const __m256i bit0 = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i bit1 = _mm256_setr_epi32(256, 512, 1024, 2048, 4096, 8192, 16384, 32768);
    for (; fix != fix_end; ++fix) {
      const __m256i cols = _mm256_set1_epi32(int32_t(fix->columns));
      const __m256i m0 = _mm256_cmpeq_epi32(_mm256_and_si256(cols, bit0), bit0);
      const __m256i m1 = _mm256_cmpeq_epi32(_mm256_and_si256(cols, bit1), bit1);
      for (int r = 0; r < MR; ++r) {
        const __m256i u = _mm256_set1_epi32(a[size_t(r) * lda + size_t(fix->k)]);
        acc[r][0] = _mm256_sub_epi32(acc[r][0], _mm256_and_si256(u, m0));
        acc[r][1] = _mm256_sub_epi32(acc[r][1], _mm256_and_si256(u, m1));
      }
    }
  }
  // + 128·Σ_k b: the a'·b above is u·b − 128·b.
  const __m256i s0 = _mm256_slli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(cs)), 7);
  const __m256i s1 = _mm256_slli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(cs + 8)), 7);
  for (int r = 0; r < MR; ++r) {
    const __m256i v0 = _mm256_add_epi32(acc[r][0], s0), v1 = _mm256_add_epi32(acc[r][1], s1);
    int32_t* cr = c + size_t(r) * ldc;
    if (ncols == kNr) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(cr), v0);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(cr + 8), v1);
    } else {
      alignas(32) int32_t t[kNr];
      _mm256_store_si256(reinterpret_cast<__m256i*>(t), v0);
      _mm256_store_si256(reinterpret_cast<__m256i*>(t + 8), v1);
      std::memcpy(cr, t, size_t(ncols) * sizeof(int32_t));
    }
  }
}

}  // namespace

bool gemm_u8s8_avx2_available() { return int8_kernels_avx2_available(); }

void pack_s8_avx2_into(PackedS8Avx2& p, const int8_t* b, int N, int K, size_t stride_n, size_t stride_k) {
  p.N = N;
  p.K = K;
  const int NB = (N + kNr - 1) / kNr, K4 = (K + 3) / 4;
  p.data.assign(size_t(NB) * size_t(K4) * kQuadBytes, 0);
  p.colsum.assign(size_t(NB) * kNr, 0);
  p.minus128_rows.clear();
  p.minus128_begin.assign(size_t(NB) + 1, 0);
  p.minus128 = 0;
  std::vector<uint32_t> mask(static_cast<size_t>(K));  // one column block's −128 columns per k
  for (int nb = 0; nb < NB; ++nb) {
    std::fill(mask.begin(), mask.end(), 0u);
    for (int n = nb * kNr; n < std::min(N, (nb + 1) * kNr); ++n) {
      int8_t* col = p.data.data() + size_t(nb) * size_t(K4) * kQuadBytes + size_t(n % kNr) * 4;
      int32_t sum = 0;
      for (int k = 0; k < K; ++k) {
        int8_t v = b[size_t(n) * stride_n + size_t(k) * stride_k];
        if (v == -128) {
          mask[size_t(k)] |= 1u << (n % kNr);
          ++p.minus128;
          v = -127;
        }
        col[size_t(k / 4) * kQuadBytes + size_t(k % 4)] = v;
        sum += v;
      }
      p.colsum[size_t(n)] = sum;
    }
    for (int k = 0; k < K; ++k)
      if (mask[size_t(k)]) p.minus128_rows.push_back({k, mask[size_t(k)]});
    p.minus128_begin[size_t(nb) + 1] = uint32_t(p.minus128_rows.size());
  }
}

PackedS8Avx2 pack_s8_avx2(const int8_t* b_nk, int N, int K) {
  PackedS8Avx2 p;
  pack_s8_avx2_into(p, b_nk, N, K, size_t(K), 1);
  return p;
}

void gemm_u8s8s32_4x16_avx2(int M, const uint8_t* a, size_t lda, const PackedS8Avx2& b, int32_t* c, size_t ldc,
                            int nb0, int nb1) {
  const int K4 = (b.K + 3) / 4;
  for (int nb = nb0; nb < nb1; ++nb) {
    const int8_t* bp = b.data.data() + size_t(nb) * size_t(K4) * kQuadBytes;
    const int32_t* cs = b.colsum.data() + size_t(nb) * kNr;
    const int ncols = std::min(kNr, b.N - nb * kNr);
    const Minus128Row* f0 = b.minus128_rows.data() + b.minus128_begin[size_t(nb)];
    const Minus128Row* f1 = b.minus128_rows.data() + b.minus128_begin[size_t(nb) + 1];
    int32_t* cb = c + size_t(nb) * kNr;
    int i = 0;
    for (; i + kMr <= M; i += kMr)
      tile<kMr>(a + size_t(i) * lda, lda, b.K, bp, cs, f0, f1, cb + size_t(i) * ldc, ldc, ncols);
    for (; i < M; ++i) tile<1>(a + size_t(i) * lda, lda, b.K, bp, cs, f0, f1, cb + size_t(i) * ldc, ldc, ncols);
  }
}

void gemm_u8s8s32_ref(int M, const uint8_t* a, size_t lda, const int8_t* b_nk, int N, int K, int32_t* c, size_t ldc) {
  for (int i = 0; i < M; ++i)
    for (int n = 0; n < N; ++n) {
      int64_t s = 0;
      for (int k = 0; k < K; ++k) s += int64_t(a[size_t(i) * lda + size_t(k)]) * b_nk[size_t(n) * size_t(K) + size_t(k)];
      c[size_t(i) * ldc + size_t(n)] = int32_t(s);
    }
}

}  // namespace vitq
