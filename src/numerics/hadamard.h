// Hadamard matrices and the fast Walsh–Hadamard transform, for rotating a network's activations
// (quant/rotation.h) — offline in double, and online (the MLP's hidden units) in float.
//
// H_n is an n × n matrix of ±1 with H_n·H_nᵀ = n·I, *normalized* (first row and first column all
// +1), for the orders n = 2^k and n = 12·2^k (k ≥ 0, n ≤ kMaxHadamardOrder):
//   * H_{2^k}: Sylvester, H_1 = [1], H_{2m} = [[H_m, H_m], [H_m, −H_m]] (symmetric);
//   * H_12: Paley's construction I with q = 11 (quadratic residues mod 11), normalized by
//     multiplying rows and columns by ±1;
//   * H_{12·2^k} = kron(H_12, H_{2^k}): entry [a·m + b][a'·m + b'] = H_12[a][a'] · H_m[b][b']
//     (m = 2^k; numpy's np.kron ordering).
// Every ViT width in use is one of these: 192 = 12·16, 384 = 12·32, 768 = 12·64, 3072 = 12·256,
// head dims 32 and 64.
#pragma once
#include <cstdint>
#include <vector>

namespace vitq {

inline constexpr int kMaxHadamardOrder = 1 << 24;

// n = 2^k or 12·2^k with 1 ≤ n ≤ kMaxHadamardOrder.
bool hadamard_supported(int n);

// H_n row-major (n × n). Throws Error(Internal) if !hadamard_supported(n) (callers check first).
std::vector<int8_t> hadamard_matrix_i8(int n);
std::vector<float> hadamard_matrix_f32(int n);

// Fast in-place transform of `rows` rows of length n: x[r] ← x[r]·H_n (unnormalized), in
// O(n log n) per row — log2(m) butterfly stages over each block of m = 2^k, then, for 12·2^k, the
// 12-point product across the 12 blocks. Single-threaded; the order of the additions differs from
// the dense product's, so results agree with hadamard_rows_ref to rounding. Throws Error(Internal)
// if !hadamard_supported(n).
void hadamard_rows(float* x, int64_t rows, int n);
// The same in double, optionally by H_nᵀ (x ← x·H_nᵀ; H_12 is not symmetric), for offline rewrites.
void hadamard_rows(double* x, int64_t rows, int n, bool transposed = false);
// Reference: the dense product with hadamard_matrix_i8(n), accumulated in double, O(n²) per row.
void hadamard_rows_ref(float* x, int64_t rows, int n);

// The online rotation of a row (the fc2 input): x[r] ← (x[r]·H_n) ∘ signs · scale, i.e. x·M with
// M = H_n·diag(signs)·scale, orthogonal when signs are ±1 and scale = 1/√n.
void hadamard_sign_rows(float* x, int64_t rows, int n, const float* signs, float scale);
// Its transpose, the input gradient of that rotation (backward passes): x[r] ← ((x[r] ∘ signs)·H_nᵀ)
// · scale, in double per row (H_n is not symmetric for 12·2^k); rows in parallel (OpenMP).
void hadamard_sign_rows_transposed(float* x, int64_t rows, int n, const float* signs, double scale);

// splitmix64 (Steele, Lea & Flood 2014; the seeding generator of xoshiro): advances the state by
// γ = 0x9E3779B97F4A7C15 and returns z = state mixed by
//   z ← (z ⊕ (z ≫ 30))·0xBF58476D1CE4E5B9; z ← (z ⊕ (z ≫ 27))·0x94D049BB133111EB; z ⊕ (z ≫ 31)
// (arithmetic mod 2^64). Defined here so that the signs are the same with every compiler and
// standard library (std:: distributions are not).
uint64_t splitmix64_next(uint64_t& state);

// n signs ±1 for (seed, stream): a splitmix64 generator started at state₀ = seed ⊕ z(stream),
// where z(stream) is the first output of splitmix64 started at `stream`; sign j is −1 if bit 63
// of output j + 1 is set, else +1. Different streams give independent-looking sequences for one
// seed (the rotation uses one stream per matrix).
std::vector<float> random_signs(int n, uint64_t seed, uint64_t stream);

}  // namespace vitq
