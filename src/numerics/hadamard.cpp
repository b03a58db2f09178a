#include "numerics/hadamard.h"

#include <algorithm>
#include <array>

#include "core/error.h"
#include "numerics/multiversion.h"

namespace vitq {
namespace {

bool is_pow2(int n) { return n > 0 && (n & (n - 1)) == 0; }

// m = 2^k with n = m or n = 12·m.
int pow2_part(int n) { return is_pow2(n) ? n : n / 12; }

void check_order(int n) {
  if (!hadamard_supported(n))
    fail(ErrorKind::Internal, "Hadamard matrix of order ", n, " requested: supported orders are 2^k and 12·2^k up to ",
         kMaxHadamardOrder);
}

// H_12 by Paley's construction I (q = 11 ≡ 3 mod 4): χ the quadratic character of GF(11), the
// Jacobsthal matrix Q[i][j] = χ(j − i) (skew-symmetric), S = [[0, 1ᵀ], [−1, Q]], H = I + S; then
// rows and columns multiplied by ±1 so that the first row and column are +1.
using Matrix12 = std::array<std::array<int8_t, 12>, 12>;
constexpr Matrix12 paley12() {
  constexpr int q = 11;
  std::array<int, q> chi{};  // χ(0) = 0, χ(r) = +1 for a nonzero square r, −1 otherwise
  chi.fill(-1);
  chi[0] = 0;
  for (int i = 1; i < q; ++i) chi[size_t(i * i % q)] = 1;
  Matrix12 h{};
  for (int i = 0; i < 12; ++i)
    for (int j = 0; j < 12; ++j) {
      int s = 0;
      if (i == 0 && j > 0) s = 1;
      else if (j == 0 && i > 0) s = -1;
      else if (i > 0) s = chi[size_t((j - i + q) % q)];
      h[size_t(i)][size_t(j)] = int8_t(s + (i == j ? 1 : 0));
    }
  Matrix12 out{};
  for (size_t i = 0; i < 12; ++i)
    for (size_t j = 0; j < 12; ++j) out[i][j] = int8_t(h[i][j] * h[i][0] * h[0][j] * h[0][0]);
  return out;
}
constexpr Matrix12 kH12 = paley12();

// Sylvester entry: H_m[b][b'] = (−1)^popcount(b & b').
int8_t sylvester(int b, int b2) { return __builtin_parity(unsigned(b & b2)) ? -1 : 1; }

#define VITQ_INLINE __attribute__((always_inline)) inline

// ---- Generic path (double; float orders with m < 8) -----------------------------------------

// x ← x·H_m in place (m = 2^k): stage h combines element pairs h apart, (u, v) → (u + v, u − v),
// which is H_{2h} = [[H_h, H_h], [H_h, −H_h]] applied to every block of 2h once the blocks of h
// are transformed. The stages commute, so the order is free.
template <class T>
VITQ_INLINE void butterflies(T* x, int m) {
  for (int h = 1; h < m; h *= 2)
    for (int i = 0; i < m; i += 2 * h)
      for (int j = i; j < i + h; ++j) {
        const T u = x[j], v = x[j + h];
        x[j] = u + v;
        x[j + h] = u - v;
      }
}

// The 12-point stage of kron(H_12, H_m): with x = [x_0 | … | x_11] in blocks of m (each already
// multiplied by H_m), y_{a'} = Σ_a H_12[a][a']·x_a (transposed: H_12[a'][a]), summed in the order
// a = 0..11 from y = x_0 (H_12's first row is +1).
template <class T>
void stage12(T* x, int m, bool transposed) {
  T in[12];
  for (int b = 0; b < m; ++b) {
    for (int a = 0; a < 12; ++a) in[a] = x[a * m + b];
    for (int a2 = 0; a2 < 12; ++a2) {
      T y = in[0];
      for (int a = 1; a < 12; ++a) {
        const int s = transposed ? kH12[size_t(a2)][size_t(a)] : kH12[size_t(a)][size_t(a2)];
        y = s > 0 ? y + in[a] : y - in[a];
      }
      x[a2 * m + b] = y;
    }
  }
}

template <class T>
void transform_row(T* x, int n, bool transposed) {
  const int m = pow2_part(n);
  if (m == n) {
    butterflies(x, n);
    return;
  }
  for (int a = 0; a < 12; ++a) butterflies(x + a * m, m);
  stage12(x, m, transposed);
}

// ---- Vectorised float path (m ≥ 8): GCC vector extensions, 8 floats, compiled for each ISA ----
// clone (AVX-512, AVX2: one register; baseline: two SSE registers). Vector values never cross a
// function boundary (that would change the ABI between clones): helpers take pointers.

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
// A permutation of one v8f by constant indices (GCC's and clang's spellings; clang builds the
// sanitizer and fuzz configurations).
#if defined(__clang__)
#define VITQ_SHUFFLE8(v, ...) __builtin_shufflevector(v, v, __VA_ARGS__)
#else
#define VITQ_SHUFFLE8(v, ...) __builtin_shuffle(v, v8i{__VA_ARGS__})
#endif

VITQ_INLINE void load8(v8f& v, const float* p) { __builtin_memcpy(&v, p, sizeof v); }
VITQ_INLINE void store8(float* p, const v8f& v) { __builtin_memcpy(p, &v, sizeof v); }

// Stages h = 1, 2, 4 on each 8 consecutive floats (x ← x·H_8 per chunk) inside a register: the
// element j pairs with j ⊕ h, y_j = x_{j⊕h} + σ_j·x_j with σ_j = −1 where j has bit h: the
// scalar butterfly's u + v and u − v, bit for bit.
VITQ_INLINE void stages_1_2_4(float* x, int m) {
  const v8f s1 = {1, -1, 1, -1, 1, -1, 1, -1}, s2 = {1, 1, -1, -1, 1, 1, -1, -1}, s4 = {1, 1, 1, 1, -1, -1, -1, -1};
  for (int i = 0; i < m; i += 8) {
    v8f v;
    load8(v, x + i);
    v = VITQ_SHUFFLE8(v, 1, 0, 3, 2, 5, 4, 7, 6) + s1 * v;
    v = VITQ_SHUFFLE8(v, 2, 3, 0, 1, 6, 7, 4, 5) + s2 * v;
    v = VITQ_SHUFFLE8(v, 4, 5, 6, 7, 0, 1, 2, 3) + s4 * v;
    store8(x + i, v);
  }
}

// Stages h and 2h (h ≥ 8) at once: the four vectors j, j + h, j + 2h, j + 3h stay in registers.
VITQ_INLINE void stages_radix4(float* x, int m, int h) {
  for (int i = 0; i < m; i += 4 * h)
    for (int j = i; j < i + h; j += 8) {
      v8f a, b, c, d;
      load8(a, x + j);
      load8(b, x + j + h);
      load8(c, x + j + 2 * h);
      load8(d, x + j + 3 * h);
      const v8f a1 = a + b, b1 = a - b, c1 = c + d, d1 = c - d;  // stage h
      store8(x + j, a1 + c1);                                      // stage 2h
      store8(x + j + h, b1 + d1);
      store8(x + j + 2 * h, a1 - c1);
      store8(x + j + 3 * h, b1 - d1);
    }
}

VITQ_INLINE void stage_radix2(float* x, int m, int h) {
  for (int i = 0; i < m; i += 2 * h)
    for (int j = i; j < i + h; j += 8) {
      v8f a, b;
      load8(a, x + j);
      load8(b, x + j + h);
      store8(x + j, a + b);
      store8(x + j + h, a - b);
    }
}

VITQ_INLINE void butterflies_f32(float* x, int m) {
  stages_1_2_4(x, m);
  int h = 8;
  for (; 4 * h <= m; h *= 4) stages_radix4(x, m, h);
  if (h < m) stage_radix2(x, m, h);
}

// The 12-point stage, 8 columns at a time, as straight-line additions and subtractions: the
// signs are compile-time constants (kH12), so the unrolled loops hold no multiplications.
VITQ_INLINE void stage12_f32(float* x, int m) {
  for (int b = 0; b < m; b += 8) {
    v8f in[12];
#pragma GCC unroll 12
    for (int a = 0; a < 12; ++a) load8(in[a], x + a * m + b);
#pragma GCC unroll 12
    for (int a2 = 0; a2 < 12; ++a2) {
      v8f y = in[0];
#pragma GCC unroll 11
      for (int a = 1; a < 12; ++a) y = kH12[size_t(a)][size_t(a2)] > 0 ? y + in[a] : y - in[a];
      store8(x + a2 * m + b, y);
    }
  }
}

VITQ_INLINE void transform_row_f32(float* x, int n) {
  const int m = pow2_part(n);
  if (m < 8) {
    transform_row(x, n, false);
    return;
  }
  if (m == n) {
    butterflies_f32(x, n);
    return;
  }
  for (int a = 0; a < 12; ++a) butterflies_f32(x + a * m, m);
  stage12_f32(x, m);
}

VITQ_MULTIVERSION
void hadamard_rows_f32(float* x, int64_t rows, int n) {
  for (int64_t r = 0; r < rows; ++r) transform_row_f32(x + r * n, n);
}

VITQ_MULTIVERSION
void hadamard_sign_rows_f32(float* x, int64_t rows, int n, const float* signs, float scale) {
  for (int64_t r = 0; r < rows; ++r) {
    float* xr = x + r * n;
    transform_row_f32(xr, n);
#pragma omp simd
    for (int j = 0; j < n; ++j) xr[j] = xr[j] * signs[j] * scale;
  }
}

}  // namespace

bool hadamard_supported(int n) {
  if (n < 1 || n > kMaxHadamardOrder) return false;
  return is_pow2(n) || (n % 12 == 0 && is_pow2(n / 12));
}

std::vector<int8_t> hadamard_matrix_i8(int n) {
  check_order(n);
  const int m = pow2_part(n);
  const bool k12 = m != n;
  std::vector<int8_t> h(size_t(n) * size_t(n));
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      const int8_t s = k12 ? kH12[size_t(i / m)][size_t(j / m)] : int8_t(1);
      h[size_t(i) * size_t(n) + size_t(j)] = int8_t(s * sylvester(i % m, j % m));
    }
  return h;
}

std::vector<float> hadamard_matrix_f32(int n) {
  const std::vector<int8_t> h = hadamard_matrix_i8(n);
  return std::vector<float>(h.begin(), h.end());
}

void hadamard_rows(float* x, int64_t rows, int n) {
  check_order(n);
  hadamard_rows_f32(x, rows, n);
}

void hadamard_rows(double* x, int64_t rows, int n, bool transposed) {
  check_order(n);
  for (int64_t r = 0; r < rows; ++r) transform_row(x + r * n, n, transposed);
}

void hadamard_rows_ref(float* x, int64_t rows, int n) {
  const std::vector<int8_t> h = hadamard_matrix_i8(n);
  std::vector<double> y(static_cast<size_t>(n));
  for (int64_t r = 0; r < rows; ++r) {
    float* xr = x + r * n;
    std::fill(y.begin(), y.end(), 0.0);
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) y[size_t(j)] += double(xr[i]) * h[size_t(i) * size_t(n) + size_t(j)];
    std::copy(y.begin(), y.end(), xr);  // double → float
  }
}

void hadamard_sign_rows(float* x, int64_t rows, int n, const float* signs, float scale) {
  check_order(n);
  hadamard_sign_rows_f32(x, rows, n, signs, scale);
}

void hadamard_sign_rows_transposed(float* x, int64_t rows, int n, const float* signs, double scale) {
  check_order(n);
#pragma omp parallel
  {
    std::vector<double> t(static_cast<size_t>(n));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      float* xr = x + r * n;
      for (int j = 0; j < n; ++j) t[size_t(j)] = double(xr[j]) * signs[j];
      transform_row(t.data(), n, /*transposed=*/true);
      for (int j = 0; j < n; ++j) xr[j] = float(t[size_t(j)] * scale);
    }
  }
}

uint64_t splitmix64_next(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::vector<float> random_signs(int n, uint64_t seed, uint64_t stream) {
  if (n < 0) fail(ErrorKind::Internal, "random_signs: negative length ", n);
  uint64_t s = stream;
  uint64_t state = seed ^ splitmix64_next(s);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& e : v) e = (splitmix64_next(state) >> 63) ? -1.0f : 1.0f;
  return v;
}

}  // namespace vitq
