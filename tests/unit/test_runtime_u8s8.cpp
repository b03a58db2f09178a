// U8S8Matmul is exact against a scalar int64 reference at the extremes of the operand ranges
// (255 x -128 in adjacent k), in every weight layout - also on CPUs without VNNI, where
// oneDNN's kernels saturate pairwise int16 sums and run() must split the activations.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

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
