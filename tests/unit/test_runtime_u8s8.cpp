// U8S8Matmul is exact against a scalar int64 reference at the extremes of the operand ranges
// (255 x -128 in adjacent k), in every weight layout - also on CPUs without VNNI, where
// oneDNN's kernels saturate pairwise int16 sums and run() must split the activations.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "numerics/gemm_u8s8_avx2.h"
#include "runtime/u8s8_matmul.h"

using vitq::BLayout;
using vitq::U8S8Matmul;

TEST(U8S8Matmul, ExactAtTheExtremesInEveryLayout) {
  std::printf("oneDNN int8 pairs saturate on this CPU: %s\n", U8S8Matmul::pairs_saturate() ? "yes" : "no");
  std::mt19937 rng(7);
  for (int trial = 0; trial < 6; ++trial) {
    const int M = 1 + trial * 7, N = 3 + trial * 5, K = 2 + trial * 13;
    std::vector<uint8_t> a(size_t(M) * K);
    std::vector<int8_t> b_nk(size_t(N) * K), b_kn(size_t(K) * N);
    for (auto& v : a) v = trial % 2 ? 255 : uint8_t(rng() % 256);
    for (auto& v : b_nk) v = trial % 3 == 0 ? -128 : int8_t(int(rng() % 256) - 128);
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < K; ++k) b_kn[size_t(k) * N + n] = b_nk[size_t(n) * K + k];
    std::vector<int64_t> ref(size_t(M) * N, 0);
    for (int i = 0; i < M; ++i)
      for (int n = 0; n < N; ++n)
        for (int k = 0; k < K; ++k) ref[size_t(i) * N + n] += int64_t(a[size_t(i) * K + k]) * b_nk[size_t(n) * K + k];
    for (BLayout layout : {BLayout::Packed, BLayout::NK, BLayout::KN}) {
      U8S8Matmul mm(N, K, layout, layout == BLayout::Packed ? b_nk.data() : nullptr);
      const int ldc = N + 3;
      std::vector<int32_t> c(size_t(M) * ldc, 0);
      mm.run(M, a.data(), K, c.data(), ldc, layout == BLayout::KN ? b_kn.data() : b_nk.data());
      int wrong = 0;
      for (int i = 0; i < M; ++i)
        for (int n = 0; n < N; ++n) wrong += c[size_t(i) * ldc + n] != ref[size_t(i) * N + n];
      EXPECT_EQ(wrong, 0) << "trial " << trial << " layout " << int(layout) << " M N K " << M << " " << N << " " << K;
    }
  }
}

// vitq's AVX2 kernel (the sign trick, numerics/gemm_u8s8_avx2.h) against the scalar int64
// reference: row and column tails (M, N not multiples of 4 / 16), K tails (K % 4 ≠ 0), rows
// lda > K apart, the extremes u ∈ {0, 255} against b ∈ {−128, 127}, codes −128 (packed as −127 and
// corrected), and a column-block range.
TEST(GemmU8S8Avx2, ExactAgainstTheScalarReference) {
  if (!vitq::gemm_u8s8_avx2_available()) GTEST_SKIP() << "no AVX2 on this CPU";
  std::mt19937 rng(11);
  for (int trial = 0; trial < 8; ++trial) {
    const int M = 1 + trial * 5, N = 1 + trial * 9, K = 1 + trial * 11;
    const size_t lda = size_t(K) + size_t(trial % 3), ldc = size_t(N) + 5;
    std::vector<uint8_t> a(size_t(M) * lda, 7);  // the gap between rows must not be read
    std::vector<int8_t> b(size_t(N) * K);
    for (int i = 0; i < M; ++i)
      for (int k = 0; k < K; ++k) a[size_t(i) * lda + size_t(k)] = trial % 2 ? uint8_t(255 * ((i + k) % 2)) : uint8_t(rng());
    for (auto& v : b) v = trial % 4 == 1 ? int8_t(rng() % 2 ? -128 : 127) : int8_t(rng());
    std::vector<int32_t> ref(size_t(M) * ldc, -1), c(size_t(M) * ldc, -1);
    vitq::gemm_u8s8s32_ref(M, a.data(), lda, b.data(), N, K, ref.data(), ldc);
    const vitq::PackedS8Avx2 p = vitq::pack_s8_avx2(b.data(), N, K);
    vitq::gemm_u8s8s32_4x16_avx2(M, a.data(), lda, p, c.data(), ldc, 0, (N + 15) / 16);
    EXPECT_EQ(c, ref) << "trial " << trial << " M N K " << M << " " << N << " " << K;
    // Only the columns of the blocks asked for are written.
    if (N > 16) {
      std::vector<int32_t> part(size_t(M) * ldc, -1);
      vitq::gemm_u8s8s32_4x16_avx2(M, a.data(), lda, p, part.data(), ldc, 1, 2);
      int wrong = 0;
      for (int i = 0; i < M; ++i)
        for (int n = 0; n < int(ldc); ++n) {
          const int32_t want = n >= 16 && n < std::min(32, N) ? ref[size_t(i) * ldc + size_t(n)] : -1;
          wrong += part[size_t(i) * ldc + size_t(n)] != want;
        }
      EXPECT_EQ(wrong, 0) << "trial " << trial;
    }
  }
}
