// FP32 GEMMs of the forward pass, through oneDNN (which picks the best ISA at run time).
#pragma once
#include <cstdint>

namespace vitq {

struct SiteCall;

// y (M x N) = x (M x K) · wᵀ (w: N x K, row-major) + beta · y. Uses oneDNN's threads when
// called outside a parallel region, runs single-threaded inside one.
void gemm_nt_f32(int64_t M, int64_t N, int64_t K, const float* x, const float* w, float* y, float beta = 0.0f);
// y (M x N) = aᵀ (a: K x M) · b (b: K x N), row-major: a Gram matrix when a = b.
void gemm_tn_f32(int64_t M, int64_t N, int64_t K, const float* a, const float* b, float* y);

// Row-major C (M × N) = op(A) · op(B) + beta·C, op = transpose for 'T' (A: M × K or K × M with row
// stride lda, likewise B); dnnl_sgemm, single-threaded inside a parallel region. For the
// backward passes (block reconstruction, image gradients).
void sgemm_f32(char ta, char tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
               int64_t ldb, float beta, float* C, int64_t ldc);

// The reference computation of a site: y[g] = x[g] · w[g]ᵀ + bias, all groups, parallelised
// over groups and row blocks for attention sites.
void site_gemm_f32(const SiteCall& call);

}  // namespace vitq
