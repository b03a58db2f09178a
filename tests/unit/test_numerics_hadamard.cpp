// Hadamard matrices (Sylvester, Paley 12, their Kronecker products), the fast transform against
// the dense product, and the deterministic sign generator.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "core/error.h"
#include "numerics/hadamard.h"
#include "random_test_util.h"

namespace vitq {
namespace {

// Every supported order up to 3072: 2^0 … 2^11 and 12·2^0 … 12·2^8.
std::vector<int> supported_orders_to_3072() {
  std::vector<int> v;
  for (int n = 1; n <= 2048; n *= 2) v.push_back(n);
  for (int n = 12; n <= 3072; n *= 2) v.push_back(n);
  return v;
}

// H·Hᵀ = n·I, checked on rows packed as bits (1 = −1): row_i · row_j = n − 2·popcount(r_i ⊕ r_j),
// which keeps n = 3072 (4.7 M row pairs) fast.
void expect_orthogonal(const std::vector<int8_t>& h, int n) {
  const size_t words = (size_t(n) + 63) / 64;
  std::vector<uint64_t> bits(size_t(n) * words, 0);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      const int8_t e = h[size_t(i) * size_t(n) + size_t(j)];
      if (e != 1 && e != -1) FAIL() << "n=" << n << " entry " << i << ", " << j << " = " << int(e);
      if (e < 0) bits[size_t(i) * words + size_t(j) / 64] |= uint64_t(1) << (j % 64);
    }
  for (int i = 0; i < n; ++i)
    for (int j = i; j < n; ++j) {
      int diff = 0;
      for (size_t w = 0; w < words; ++w) diff += std::popcount(bits[size_t(i) * words + w] ^ bits[size_t(j) * words + w]);
      if (n - 2 * diff != (i == j ? n : 0)) FAIL() << "n=" << n << " rows " << i << ", " << j << ": dot " << n - 2 * diff;
    }
}

TEST(Hadamard, SupportedOrders) {
  for (int n : {1, 2, 4, 64, 1024, 12, 24, 192, 384, 768, 1536, 3072, 12 * 4096}) EXPECT_TRUE(hadamard_supported(n)) << n;
  for (int n : {0, -4, 3, 6, 20, 36, 100, 320, 1000, 2304, 1 << 25}) EXPECT_FALSE(hadamard_supported(n)) << n;
}

TEST(Hadamard, OrthogonalAndNormalizedUpTo3072) {
  for (int n : supported_orders_to_3072()) {
    const std::vector<int8_t> h = hadamard_matrix_i8(n);
    ASSERT_EQ(h.size(), size_t(n) * size_t(n));
    for (int j = 0; j < n; ++j) {
      ASSERT_EQ(h[size_t(j)], 1) << "first row, n=" << n;
      ASSERT_EQ(h[size_t(j) * size_t(n)], 1) << "first column, n=" << n;
    }
    expect_orthogonal(h, n);
  }
}

TEST(Hadamard, KroneckerOrdering) {
  // H_{12m}[a·m + b][a'·m + b'] = H_12[a][a'] · H_m[b][b'].
  const int m = 8, n = 12 * m;
  const auto h = hadamard_matrix_i8(n), h12 = hadamard_matrix_i8(12), hm = hadamard_matrix_i8(m);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j)
      ASSERT_EQ(h[size_t(i * n + j)], h12[size_t(i / m * 12 + j / m)] * hm[size_t(i % m * m + j % m)]) << i << "," << j;
  const auto f = hadamard_matrix_f32(n);
  for (size_t i = 0; i < f.size(); ++i) ASSERT_EQ(f[i], float(h[i]));
}

TEST(Hadamard, UnsupportedOrderRefused) {
  std::vector<float> x(100, 1.0f);
  std::vector<double> xd(100, 1.0);
  EXPECT_THROW(hadamard_matrix_i8(100), Error);
  EXPECT_THROW(hadamard_rows(x.data(), 1, 100), Error);
  EXPECT_THROW(hadamard_rows(xd.data(), 1, 100), Error);
  EXPECT_THROW(hadamard_sign_rows(x.data(), 1, 20, x.data(), 1.0f), Error);
  EXPECT_THROW(hadamard_rows(x.data(), 1, 0), Error);
}

const int kFastOrders[] = {1, 2, 8, 12, 24, 64, 128, 192, 256, 384, 768, 1536, 3072};

// Small integers: every partial sum is an integer below 2^24, so any order of the additions is
// exact and the fast transform must equal the dense product bit for bit.
TEST(Hadamard, FastEqualsDenseExactlyOnIntegers) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> u(-100, 100);
  for (int n : kFastOrders) {
    const int rows = 3;
    std::vector<float> x(size_t(rows) * size_t(n));
    for (auto& v : x) v = float(u(rng));
    std::vector<float> ref = x;
    hadamard_rows(x.data(), rows, n);
    hadamard_rows_ref(ref.data(), rows, n);
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(x[i], ref[i]) << "n=" << n << " i=" << i;
  }
}

// Real inputs: each output is a sum of n signed inputs along an addition tree of depth
// log2(m) (+ 11 for the 12-point stage), so |fast − exact| ≤ depth·u·Σ|x| (u = 2^−24, first
// order), and the reference (double, then rounded) is within u·|y| of exact.
TEST(Hadamard, FastMatchesDenseOnReals) {
  for (int n : kFastOrders) {
    const int rows = 4;
    std::vector<float> x = test::random_vec(size_t(rows) * size_t(n), 1.0f, uint32_t(n));
    std::vector<float> ref = x;
    const std::vector<float> in = x;
    hadamard_rows(x.data(), rows, n);
    hadamard_rows_ref(ref.data(), rows, n);
    const int m = n % 3 == 0 ? n / 12 : n;
    const double depth = std::log2(double(m)) + (m == n ? 0 : 11);
    for (int r = 0; r < rows; ++r) {
      double l1 = 0;
      for (int j = 0; j < n; ++j) l1 += std::fabs(in[size_t(r * n + j)]);
      for (int j = 0; j < n; ++j) {
        const size_t i = size_t(r * n + j);
        const double bound = (depth + 1) * 0x1p-24 * l1 + 0x1p-24 * std::fabs(ref[i]);
        ASSERT_LE(std::fabs(double(x[i]) - ref[i]), bound) << "n=" << n << " r=" << r << " j=" << j;
      }
    }
  }
}

// The double transform, by H and by Hᵀ, against the dense matrix.
TEST(Hadamard, DoubleTransformAndTranspose) {
  for (int n : {16, 96, 192, 768}) {
    const std::vector<int8_t> h = hadamard_matrix_i8(n);
    const std::vector<float> xf = test::random_vec(size_t(n), 1.0f, 3);
    for (bool transposed : {false, true}) {
      std::vector<double> x(xf.begin(), xf.end());
      hadamard_rows(x.data(), 1, n, transposed);
      for (int j = 0; j < n; ++j) {
        double y = 0;
        for (int i = 0; i < n; ++i) y += double(xf[size_t(i)]) * (transposed ? h[size_t(j * n + i)] : h[size_t(i * n + j)]);
        ASSERT_NEAR(x[size_t(j)], y, 1e-12 * n) << "n=" << n << " transposed=" << transposed;
      }
    }
  }
  // H_12 is not symmetric, so the two differ.
  std::vector<double> a(12), b(12);
  std::iota(a.begin(), a.end(), 1.0);
  b = a;
  hadamard_rows(a.data(), 1, 12, false);
  hadamard_rows(b.data(), 1, 12, true);
  EXPECT_NE(a, b);
}

// The online rotation kernel = dense product, then signs and scale; and it is orthogonal.
TEST(Hadamard, SignRowsIsOrthogonalRotation) {
  for (int n : {64, 768, 3072}) {
    const std::vector<float> s = random_signs(n, 5, 1);
    const float scale = 1.0f / std::sqrt(float(n));
    std::vector<float> x = test::random_vec(size_t(2 * n), 1.0f, 9), ref = x;
    const std::vector<float> in = x;
    hadamard_sign_rows(x.data(), 2, n, s.data(), scale);
    hadamard_rows_ref(ref.data(), 2, n);
    double nx = 0, ny = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_NEAR(x[i], ref[i] * s[i % size_t(n)] * scale, 1e-5) << "n=" << n;
      nx += double(in[i]) * in[i];
      ny += double(x[i]) * x[i];
    }
    EXPECT_NEAR(ny / nx, 1.0, 1e-5) << "norm kept, n=" << n;
  }
}

// The transpose (a backward pass's rotation) = the dense product with H_nᵀ after the signs, and
// it undoes the forward rotation (n = 768 = 12·64: H_n is not symmetric there).
TEST(Hadamard, SignRowsTransposedIsTheInverseRotation) {
  for (int n : {64, 768}) {
    const std::vector<float> s = random_signs(n, 7, 2);
    const double scale = 1.0 / std::sqrt(double(n));
    const std::vector<int8_t> h = hadamard_matrix_i8(n);
    const std::vector<float> in = test::random_vec(size_t(2 * n), 1.0f, 11);
    std::vector<float> x = in;
    hadamard_sign_rows_transposed(x.data(), 2, n, s.data(), scale);
    for (int r = 0; r < 2; ++r)
      for (int j = 0; j < n; ++j) {
        double ref = 0;
        for (int i = 0; i < n; ++i) ref += double(in[size_t(r * n + i)]) * s[size_t(i)] * h[size_t(j) * size_t(n) + size_t(i)];
        ASSERT_NEAR(x[size_t(r * n + j)], ref * scale, 1e-5) << "n=" << n;
      }
    std::vector<float> y = in;
    hadamard_sign_rows(y.data(), 2, n, s.data(), float(scale));
    hadamard_sign_rows_transposed(y.data(), 2, n, s.data(), scale);
    for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], in[i], 1e-5) << "n=" << n;
  }
}

TEST(Hadamard, Splitmix64KnownValues) {
  // splitmix64 from state 0 (the reference implementation's published first outputs).
  uint64_t st = 0;
  EXPECT_EQ(splitmix64_next(st), 0xE220A8397B1DCDAFull);
  EXPECT_EQ(splitmix64_next(st), 0x6E789E6AA1B965F4ull);
  EXPECT_EQ(splitmix64_next(st), 0x06C45D188009454Full);
}

TEST(Hadamard, RandomSignsDeterministicAndSeedDependent) {
  const std::vector<float> a = random_signs(768, 42, 0);
  EXPECT_EQ(a, random_signs(768, 42, 0));
  EXPECT_NE(a, random_signs(768, 43, 0));
  EXPECT_NE(a, random_signs(768, 42, 1));
  // A prefix of a longer draw: sign j depends only on (seed, stream, j).
  const std::vector<float> b = random_signs(1000, 42, 0);
  EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin()));
  int plus = 0;
  for (float v : a) {
    ASSERT_TRUE(v == 1.0f || v == -1.0f);
    plus += v > 0;
  }
  EXPECT_GT(plus, 768 / 2 - 100);  // balanced (± 3.6 σ)
  EXPECT_LT(plus, 768 / 2 + 100);
  EXPECT_TRUE(random_signs(0, 1, 1).empty());
}

}  // namespace
}  // namespace vitq
