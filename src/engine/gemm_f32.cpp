#include "engine/gemm_f32.h"

#include <dnnl.h>

#include <algorithm>

#include "core/error.h"
#include "engine/kernels.h"
#include "engine/site.h"

namespace vitq {

void sgemm_f32(char ta, char tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
               int64_t ldb, float beta, float* C, int64_t ldc) {
  if (dnnl_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc) != dnnl_success)
    fail(ErrorKind::Internal, "dnnl_sgemm failed (", M, "x", N, "x", K, ")");
}

void gemm_nt_f32(int64_t M, int64_t N, int64_t K, const float* x, const float* w, float* y, float beta) {
  if (M == 0 || N == 0) return;
  dnnl_status_t st = dnnl_sgemm('N', 'T', M, N, K, 1.0f, x, K, w, K, beta, y, N);
  if (st != dnnl_success) fail(ErrorKind::Internal, "oneDNN sgemm failed (status ", int(st), ") for M=", M, " N=", N, " K=", K);
}

void gemm_tn_f32(int64_t M, int64_t N, int64_t K, const float* a, const float* b, float* y) {
  if (M == 0 || N == 0) return;
  dnnl_status_t st = dnnl_sgemm('T', 'N', M, N, K, 1.0f, a, M, b, N, 0.0f, y, N);
  if (st != dnnl_success) fail(ErrorKind::Internal, "oneDNN sgemm failed (status ", int(st), ") for M=", M, " N=", N, " K=", K);
}

void site_gemm_f32(const SiteCall& c) {
  if (c.groups == 1) {
    for_row_chunks(c.M, image_rows(c), [&](int r0, int rows) {  // image by image (site.h)
      gemm_nt_f32(rows, c.N, c.K, c.x + int64_t(r0) * c.K, c.w, c.y + int64_t(r0) * c.N);
    });
    if (c.bias) {
#pragma omp parallel for schedule(static)
      for (int r = 0; r < c.M; ++r) add_bias_rows(c.y + int64_t(r) * c.N, 1, size_t(c.N), c.bias);
    }
    return;
  }
  // Attention: many small independent products. Split each group's rows into blocks so that
  // the work divides evenly over the threads even when groups < threads.
  const int rb = 64;
  const int row_blocks = (c.M + rb - 1) / rb;
  const int tasks = c.groups * row_blocks;
#pragma omp parallel for schedule(static)
  for (int t = 0; t < tasks; ++t) {
    const int g = t / row_blocks, r0 = (t % row_blocks) * rb;
    const int rows = std::min(rb, c.M - r0);
    const float* x = c.x + g * c.x_stride() + int64_t(r0) * c.K;
    const float* w = c.w + g * c.w_stride;
    float* y = c.y + g * c.y_stride() + int64_t(r0) * c.N;
    gemm_nt_f32(rows, c.N, c.K, x, w, y);
    if (c.bias) add_bias_rows(y, size_t(rows), size_t(c.N), c.bias);
  }
}

}  // namespace vitq
