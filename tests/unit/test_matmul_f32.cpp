// The plain forward's oneDNN matmuls (prepacked linear, batched attention products) against a
// scalar double-precision reference.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "engine/batched_matmul_f32.h"
#include "engine/packed_linear_f32.h"
#include "random_test_util.h"

namespace vitq {
namespace {

using test::random_vec;

// Largest |got − ref| relative to the reference's largest magnitude.
double max_rel_diff(const std::vector<float>& got, const std::vector<double>& ref) {
  double worst = 0, scale = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    worst = std::max(worst, std::fabs(double(got[i]) - ref[i]));
    scale = std::max(scale, std::fabs(ref[i]));
  }
  return worst / scale;
}

TEST(PackedLinearF32, MatchesReferenceForEveryRowCount) {
  for (const auto& [N, K] : {std::pair{19, 7}, std::pair{192, 64}, std::pair{100, 300}}) {
    for (bool with_bias : {false, true}) {
      const std::vector<float> w = random_vec(size_t(N) * K, 1.0f, 1), b = random_vec(size_t(N), 1.0f, 2);
      PackedLinearF32 lin(N, K, w.data(), with_bias ? b.data() : nullptr);
      for (int M : {1, 5, 197, 200, 1}) {  // row counts other than the one the layout was chosen for; a cached one again
        const std::vector<float> x = random_vec(size_t(M) * K, 1.0f, uint32_t(3 + M));
        std::vector<float> y(size_t(M) * N, -1.0f);
        lin.run(M, x.data(), y.data());
        std::vector<double> ref(y.size());
        for (int r = 0; r < M; ++r)
          for (int n = 0; n < N; ++n) {
            double s = with_bias ? b[size_t(n)] : 0.0;
            for (int k = 0; k < K; ++k) s += double(x[size_t(r) * K + k]) * w[size_t(n) * K + k];
            ref[size_t(r) * N + n] = s;
          }
        EXPECT_LT(max_rel_diff(y, ref), 1e-5) << "N=" << N << " K=" << K << " M=" << M << " bias=" << with_bias;
      }
    }
  }
}

TEST(BatchedMatmulF32, MatchesReferenceForEveryGroupCount) {
  const int M = 13, N = 17, K = 9;
  BatchedMatmulF32 mm(M, N, K);
  for (int G : {1, 3, 24, 3}) {
    const std::vector<float> a = random_vec(size_t(G) * M * K, 1.0f, uint32_t(G));
    const std::vector<float> b = random_vec(size_t(G) * K * N, 1.0f, 99);
    std::vector<float> y(size_t(G) * M * N, -1.0f);
    mm.run(G, a.data(), b.data(), y.data());
    std::vector<double> ref(y.size());
    for (int g = 0; g < G; ++g)
      for (int r = 0; r < M; ++r)
        for (int n = 0; n < N; ++n) {
          double s = 0;
          for (int k = 0; k < K; ++k) s += double(a[(size_t(g) * M + r) * K + k]) * b[(size_t(g) * K + k) * N + n];
          ref[(size_t(g) * M + r) * N + n] = s;
        }
    EXPECT_LT(max_rel_diff(y, ref), 1e-5) << "groups=" << G;
  }
}

}  // namespace
}  // namespace vitq
