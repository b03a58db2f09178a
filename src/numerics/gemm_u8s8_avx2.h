// Exact u8 x s8 -> s32 GEMM for x86 CPUs with AVX2 but without VNNI, where oneDNN's int8 kernels
// add adjacent u8·s8 products into saturating int16 (vpmaddubsw) and are exact only for small
// operands (runtime/u8s8_matmul.h). The sign trick keeps vpmaddubsw's speed and exactness:
// u·b = a'·b + 128·b with a' = u − 128 (s8), and a'·b = |a'| · (sign(a')·b), so vpmaddubsw of
// |a'| (u8, ≤ 128) and sign(a')·b (s8) adds two products of at most 128·127: 32512 ≤ 32767, never
// saturating, for b in [−127, 127]. A weight code of −128 is packed as −127 and its missing −u
// subtracted in the tile, from the accumulators (per column block, each k that has codes −128 with
// the mask of their columns: one broadcast and two masked subtractions per row). c = a·B exactly.
//
// Micro-kernel: 4 rows x 16 columns of int32 accumulators (8 ymm registers); B packed per block
// of 16 columns as k-quads (for each 4 consecutive k: columns 0..7 then 8..15, 4 bytes each).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/aligned.h"

namespace vitq {

// The codes −128 of one k in one column block: bit j of `columns` is column 16·block + j.
struct Minus128Row {
  int32_t k;
  uint32_t columns;
};
static_assert(sizeof(Minus128Row) == 8, "two words per entry");

struct PackedS8Avx2 {
  int N = 0, K = 0;
  avector<int8_t> data;                    // [N/16 blocks][ceil(K/4) quads][64 bytes], zero-padded
  std::vector<int32_t> colsum;             // Σ_k of the packed codes per column (padded to 16)
  std::vector<Minus128Row> minus128_rows;  // by column block, then k
  std::vector<uint32_t> minus128_begin;    // per column block, its first entry in minus128_rows (+ the end)
  size_t minus128 = 0;                     // how many codes are −128 (packed as −127)
};

// The CPU can run gemm_u8s8s32_4x16_avx2.
bool gemm_u8s8_avx2_available();
// Packs B given as N x K row-major (PyTorch's [out, in]).
PackedS8Avx2 pack_s8_avx2(const int8_t* b_nk, int N, int K);
// Packs B[k][n] = b[n·stride_n + k·stride_k] into p, reusing its storage (a per-call B: the keys
// of a head as N x K, stride_n = K, stride_k = 1; its values as K x N, stride_n = 1, stride_k = N).
void pack_s8_avx2_into(PackedS8Avx2& p, const int8_t* b, int N, int K, size_t stride_n, size_t stride_k);
// c (M x N, rows ldc apart) = a (M x K u8, rows lda apart) · B, on the calling thread, for the
// column blocks [nb0, nb1) of 16 (the whole B: 0, ceil(N/16)).
void gemm_u8s8s32_4x16_avx2(int M, const uint8_t* a, size_t lda, const PackedS8Avx2& b, int32_t* c, size_t ldc,
                            int nb0, int nb1);
// The scalar reference: int64 sums, stored as int32.
void gemm_u8s8s32_ref(int M, const uint8_t* a, size_t lda, const int8_t* b_nk, int N, int K, int32_t* c, size_t ldc);

}  // namespace vitq
